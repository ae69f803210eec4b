"""Measure diffusers' AutoencoderTiny (TAESD) against worldsim's FrameAutoencoder.

Read-only with respect to the project: it imports worldsim's model, training stage and training loop
and writes only under --out / the run directories it is given.

    python benchmarks/measure_autoencoder_tiny.py info                 # param counts, MACs
    python benchmarks/measure_autoencoder_tiny.py time --out /tmp/ae_time.json > timing.log
    python benchmarks/measure_autoencoder_tiny.py report timing.log    # markdown table with ratios to ours
    python benchmarks/measure_autoencoder_tiny.py train --model ours --data data/ae_probe.h5 --out runs/ae_probe_ours
    python benchmarks/measure_autoencoder_tiny.py train --model tiny --tiny-width 24 --data ... --out runs/ae_tiny24

The commands and numbers are in docs/autoencoder.md.

AutoencoderTiny cannot express per-level widths: its stride-2 (encoder) and post-upsample (decoder)
convs map width_i -> width_i, so block_out_channels=(16, 32, 64, 128) fails with a channel mismatch.
It is therefore built with one uniform width W (TAESD itself uses 64) and one block per level, as ours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from worldsim.config import AutoencoderConfig
from worldsim.models.autoencoder import FrameAutoencoder


# ------------------------------------------------------------------ the diffusers model, same interface as ours
class TinyAE(nn.Module):
    """diffusers.AutoencoderTiny behind FrameAutoencoder's interface (encode/decode uint8, latent_scale)."""

    def __init__(
        self,
        width: int = 32,
        latent_channels: int = 8,
        enc_blocks=(1, 1, 1, 1),
        dec_blocks=(1, 1, 1, 1),
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderTiny

        n = len(enc_blocks)
        self.vae = AutoencoderTiny(
            encoder_block_out_channels=(width,) * n,
            decoder_block_out_channels=(width,) * n,
            latent_channels=latent_channels,
            num_encoder_blocks=tuple(enc_blocks),
            num_decoder_blocks=tuple(dec_blocks),
        )
        self.channels_last = channels_last
        if channels_last:
            self.vae.decoder.to(memory_format=torch.channels_last)
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def decoder(self) -> nn.Module:
        return self.vae.decoder

    def forward(self, pixels: Tensor) -> Tensor:
        return self.vae.decoder(self.vae.encoder(pixels))

    def encode_distribution(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        z = self.vae.encoder(pixels)
        return z, torch.zeros_like(z)

    def decode_pixels(self, z: Tensor) -> Tensor:
        return self.vae.decoder(z)

    @torch.inference_mode()
    def encode(self, frames: Tensor) -> Tensor:
        lead = frames.shape[:-3]
        pixels = FrameAutoencoder.to_pixels(frames.reshape(-1, *frames.shape[-3:]))
        z = self.vae.encoder(pixels.to(self.latent_scale.device))
        return (z * self.latent_scale).reshape(*lead, *z.shape[1:])

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        """Same steps as FrameAutoencoder.decode: unscale, (channels_last), decoder, to uint8."""
        lead = latents.shape[:-3]
        z = latents.reshape(-1, *latents.shape[-3:]) / self.latent_scale
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        pixels = self.vae.decoder(z)
        return FrameAutoencoder.to_uint8(pixels).reshape(*lead, *pixels.shape[-2:], 3)


def ours_model() -> FrameAutoencoder:
    return FrameAutoencoder(AutoencoderConfig())


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_macs(module: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of the Conv2d layers for one forward of ``x``."""
    total = 0

    def hook(mod: nn.Conv2d, inp, out) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += out.numel() * k

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        module(x)
    for h in hs:
        h.remove()
    return total


def candidates() -> dict[str, nn.Module]:
    return {
        "ours": ours_model(),
        "tiny16": TinyAE(16),
        "tiny24": TinyAE(24),
        "tiny32": TinyAE(32),
        "tiny32_contig": TinyAE(32, channels_last=False),
        "tiny64": TinyAE(64),  # about ours' parameter count
        # TAESD's own shape (64 wide, 1/3/3/3 encoder and 3/3/3/1 decoder blocks), 8 latent channels.
        "taesd64": TinyAE(64, enc_blocks=(1, 3, 3, 3), dec_blocks=(3, 3, 3, 1)),
    }


def info() -> dict:
    out = {}
    z = torch.randn(1, 8, 8, 8)
    x = torch.randn(1, 3, 64, 64)
    for name, m in candidates().items():
        m.eval()
        enc = m.encoder if isinstance(m, FrameAutoencoder) else m.vae.encoder
        lat = enc(x)
        lat = lat[0] if isinstance(lat, tuple) else lat
        out[name] = {
            "params_total": n_params(m),
            "params_encoder": n_params(enc),
            "params_decoder": n_params(m.decoder),
            "decoder_mmacs_per_frame": round(conv_macs(m.decoder, z) / 1e6, 1),
            "encoder_mmacs_per_frame": round(conv_macs(enc, x) / 1e6, 1),
            "latent_shape": list(lat.shape[1:]),
        }
    return out


# --------------------------------------------------------------------------- decode timing
def time_decode(
    models: dict[str, nn.Module],
    reps: dict[int, int],
    threads: list[int],
    dtypes=("fp32", "bf16_autocast", "bf16_weights"),
    paths=("net", "full"),
) -> list[dict]:
    """Median seconds per call, models interleaved call by call so load on the box hits them alike."""
    rows = []
    import copy

    for m in models.values():
        m.eval()
    bf16_models = {name: copy.deepcopy(m).to(torch.bfloat16) for name, m in models.items()}
    for t in threads:
        torch.set_num_threads(t)
        for batch, n_rep in reps.items():
            z = torch.randn(batch, 8, 8, 8)
            for dtype in dtypes:
                for path in paths:
                    fns = {}
                    for name, m in models.items():
                        mm = bf16_models[name] if dtype == "bf16_weights" else m
                        zz = z.to(torch.bfloat16) if dtype == "bf16_weights" else z
                        zn = (
                            zz.contiguous(memory_format=torch.channels_last)
                            if getattr(m, "channels_last", True)
                            else zz
                        )
                        if path == "net":
                            fns[name] = lambda mm=mm, zn=zn: mm.decoder(zn)
                        else:
                            fns[name] = lambda mm=mm, zz=zz: mm.decode(zz)
                    times = {k: [] for k in fns}
                    cpu = {k: [] for k in fns}
                    ac = dtype == "bf16_autocast"
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=ac):
                        for _ in range(max(5, n_rep // 10)):  # warm-up
                            for f in fns.values():
                                f()
                        for _ in range(n_rep):
                            for k, f in fns.items():
                                c0, t0 = time.thread_time(), time.perf_counter()
                                f()
                                times[k].append(time.perf_counter() - t0)
                                cpu[k].append(time.thread_time() - c0)
                    for k, v in times.items():
                        rows.append(
                            {
                                "model": k,
                                "threads": t,
                                "batch": batch,
                                "dtype": dtype,
                                "path": path,
                                "median_ms": statistics.median(v) * 1e3,
                                "p10_ms": float(np.percentile(v, 10)) * 1e3,
                                "min_ms": min(v) * 1e3,
                                # With 1 thread the work runs on this thread: its CPU time is immune to the
                                # preemption a shared, loaded machine adds to wall time.
                                "thread_cpu_median_ms": statistics.median(cpu[k]) * 1e3,
                                "per_frame_ms": statistics.median(v) * 1e3 / batch,
                                "reps": n_rep,
                            }
                        )
                    line = "  ".join(
                        f"{k}={statistics.median(v) * 1e3:.2f}/{np.percentile(v, 10) * 1e3:.2f}/"
                        f"{statistics.median(cpu[k]) * 1e3:.2f}"
                        for k, v in times.items()
                    )
                    print(f"threads={t} batch={batch} {dtype:13s} {path:4s} ms (median/p10/cpu): {line}", flush=True)
    return rows


# --------------------------------------------------------------------------- training through the project's loop
def make_stage(model: str, cfg, tiny_width: int):
    from worldsim.training.autoencoder import AutoencoderStage

    class Ours(AutoencoderStage):
        def export(self, ema, out, card):
            super().export(ema, out, card)
            self.final_ema = ema

    class Tiny(AutoencoderStage):
        name = "autoencoder"

        def __init__(self, cfg) -> None:
            super().__init__(cfg)
            torch.manual_seed(cfg.seed)
            self.model = TinyAE(tiny_width, cfg.latent_channels)

        def loss(self, model, batch, generator, rows, global_batch):
            # Ours' loss without the KL term (AutoencoderTiny's latent is deterministic).
            pixels = FrameAutoencoder.to_pixels(batch["frames"][:, 0]).to(next(model.parameters()).device)
            recon = model(pixels)
            err = recon.float() - pixels
            l1 = err.abs().mean()
            mse = err.pow(2).mean()
            loss = l1 + mse
            psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))
            return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": 0.0, "psnr": psnr.item()}

        def export(self, ema, out, card):
            ema.latent_scale.fill_(self.latent_scale(ema))
            (out / "tiny").mkdir(parents=True, exist_ok=True)
            torch.save({"width": tiny_width, "state": ema.state_dict()}, out / "tiny" / "ema.pt")
            self.final_ema = ema

    return Ours(cfg) if model == "ours" else Tiny(cfg)


@torch.inference_mode()
def heldout_psnr(model: nn.Module, data: str, holdout: int) -> dict:
    from worldsim.data.reader import TrajectoryReader

    reader = TrajectoryReader(data)
    n = len(reader)
    psnrs = []
    for e in range(n - holdout, n):
        frames = torch.from_numpy(reader.frames(e))
        for i in range(0, len(frames), 128):
            f = frames[i : i + 128]
            rec = model.decode(model.encode(f))
            mse = (rec.float() - f.float()).pow(2).mean(dim=(1, 2, 3))
            psnrs.append(10 * torch.log10(255.0**2 / mse.clamp_min(1e-10)))
    p = torch.cat(psnrs).numpy()
    mse_mean = float(np.mean(255.0**2 / 10 ** (p / 10)))
    return {
        "frames": int(len(p)),
        "psnr_mean": float(p.mean()),
        "psnr_p10": float(np.percentile(p, 10)),
        "psnr_of_mean_mse": float(10 * np.log10(255.0**2 / mse_mean)),
        "mse_mean_uint8": mse_mean,
    }


def train_one(args) -> dict:
    from worldsim.training.config import AutoencoderTrainConfig
    from worldsim.training.loop import train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    cfg = AutoencoderTrainConfig(
        data=args.data,
        out=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        workers=0,
        holdout=args.holdout,
        save_minutes=1e9,
        seed=0,
        precision=args.precision,
        log_every=50,
        max_minutes=args.max_minutes,
    )
    stage = make_stage(args.model, cfg, args.tiny_width)
    summary = train(stage, cfg, progress=False)
    ema = stage.final_ema.eval()
    res = {
        "model": args.model if args.model == "ours" else f"tiny{args.tiny_width}",
        "params": n_params(ema),
        "train": {k: summary[k] for k in ("step", "seconds", "clips_per_s", "precision", "final_metrics")},
        "recipe": {
            "steps": args.steps,
            "batch": args.batch_size,
            "lr": args.lr,
            "warmup": args.warmup,
            "holdout_episodes": args.holdout,
            "threads": args.threads,
        },
        "heldout": heldout_psnr(ema, args.data, args.holdout),
    }
    (out / "result.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


def parse_time_log(path: str) -> list[dict]:
    """Rows from the lines ``time`` prints (threads=.. batch=.. dtype path ms (median/p10/cpu): model=a/b/c ...)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("threads="):
            continue
        head, cells = line.split(": ", 1)
        parts = head.split()
        t, b, dtype, path_ = int(parts[0][8:]), int(parts[1][6:]), parts[2], parts[3]
        for cell in cells.split():
            name, vals = cell.split("=")
            med, p10, cpu = map(float, vals.split("/"))
            rows.append(
                {
                    "model": name,
                    "threads": t,
                    "batch": b,
                    "dtype": dtype,
                    "path": path_,
                    "median_ms": med,
                    "p10_ms": p10,
                    "thread_cpu_median_ms": cpu,
                }
            )
    return rows


def report(log: str, key: str) -> str:
    """Markdown table: ``key`` ms per call for every cell, and each model's ratio to ours."""
    rows = parse_time_log(log)
    models = list(dict.fromkeys(r["model"] for r in rows))
    cells = list(dict.fromkeys((r["threads"], r["batch"], r["dtype"], r["path"]) for r in rows))
    by = {(r["model"], r["threads"], r["batch"], r["dtype"], r["path"]): r[key] for r in rows}
    out = [
        "| threads | batch | dtype | path | " + " | ".join(models) + " |",
        "|---|---|---|---|" + "---|" * len(models),
    ]
    for c in cells:
        base = by[("ours", *c)]
        vals = [f"{by[(m, *c)]:.2f}" + ("" if m == "ours" else f" ({by[(m, *c)] / base:.2f}x)") for m in models]
        out.append(f"| {c[0]} | {c[1]} | {c[2]} | {c[3]} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info")
    t = sub.add_parser("time")
    t.add_argument("--out", default="/tmp/ae_time.json")
    t.add_argument("--reps1", type=int, default=200)
    t.add_argument("--reps16", type=int, default=40)
    t.add_argument("--models", default="ours,tiny16,tiny24,tiny32")
    t.add_argument("--threads", default="2,1")
    t.add_argument("--batches", default="1,16")
    t.add_argument("--dtypes", default="fp32,bf16_autocast,bf16_weights")
    t.add_argument("--paths", default="net,full")
    rp = sub.add_parser("report")
    rp.add_argument("log")
    rp.add_argument("--key", default="thread_cpu_median_ms")
    tr = sub.add_parser("train")
    tr.add_argument("--model", choices=["ours", "tiny"], required=True)
    tr.add_argument("--tiny-width", type=int, default=32)
    tr.add_argument("--data", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument("--steps", type=int, default=600)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--warmup", type=int, default=60)
    tr.add_argument("--holdout", type=int, default=4)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument("--precision", default="auto")
    tr.add_argument("--max-minutes", type=float, default=0.0)
    args = p.parse_args()
    if args.cmd == "info":
        print(json.dumps(info(), indent=2))
    elif args.cmd == "report":
        print(report(args.log, args.key))
    elif args.cmd == "time":
        torch.manual_seed(0)
        all_models = candidates()
        models = {k: all_models[k] for k in args.models.split(",")}
        reps = {b: (args.reps1 if b == 1 else args.reps16) for b in map(int, args.batches.split(","))}
        rows = time_decode(
            models, reps, [int(t) for t in args.threads.split(",")], args.dtypes.split(","), args.paths.split(",")
        )
        Path(args.out).write_text(json.dumps({"torch": torch.__version__, "rows": rows, "info": info()}, indent=2))
    else:
        train_one(args)


if __name__ == "__main__":
    main()
