"""Training: exact resume, 2-process DDP equals 1 process, an overfit that learns, and clean CLI errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
from types import SimpleNamespace

import gymnasium as gym
import pytest
import torch
from helpers import ddp_worker, write_dataset

from worldsim.checkpoint import save_autoencoder
from worldsim.cli import main
from worldsim.config import ActionSpec, AutoencoderConfig
from worldsim.diffusion.schedule import velocity_target
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.training.autoencoder import AutoencoderStage, load_trained_autoencoder
from worldsim.training.config import AutoencoderTrainConfig, WorldTrainConfig, with_preset
from worldsim.training.loop import train
from worldsim.training.objectives import diffusion_forcing_loss, draw_forcing_noise, motion_weights
from worldsim.training.world import WorldStage

TINY_AE = AutoencoderConfig(widths=[8, 16], latent_channels=4)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.h5"
    write_dataset(path, lengths=(14, 20, 9), size=16)
    return path


@pytest.fixture
def autoencoder_dir(tmp_path):
    torch.manual_seed(0)
    ae = FrameAutoencoder(TINY_AE)
    save_autoencoder(tmp_path / "ae", [16, 16], dataclasses.asdict(TINY_AE), ae.state_dict())
    return tmp_path / "ae"


def world_cfg(data, ae, out, **changes) -> WorldTrainConfig:
    base = dict(
        data=str(data),
        autoencoder=str(ae),
        out=str(out),
        steps=6,
        batch_size=4,
        workers=0,
        precision="fp32",
        save_minutes=1e6,
    )
    return with_preset(WorldTrainConfig, "world", "tiny", {**base, **changes})


def final_state(out) -> dict[str, dict[str, torch.Tensor]]:
    state = torch.load(out / "state" / "world.pt", weights_only=True)
    return {"model": state["model"], "ema": state["ema"], "step": state["step"]}


def assert_same_params(a: dict, b: dict, atol: float) -> None:
    assert a["step"] == b["step"]
    for part in ("model", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], atol=atol, rtol=0, msg=f"{part}.{k} differs")


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, data, autoencoder_dir):
    full = world_cfg(data, autoencoder_dir, tmp_path / "a")
    result = train(WorldStage(full), full, progress=False)
    assert result["step"] == 6 and not result["interrupted"]

    def ctrl_c_at_3(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the loop finishes the step, saves, returns

    split = world_cfg(data, autoencoder_dir, tmp_path / "b")
    first = train(WorldStage(split), split, progress=False, on_step=ctrl_c_at_3)
    assert first["interrupted"] and first["step"] == 3
    assert (tmp_path / "b" / "world" / "model.safetensors").exists(), "Ctrl-C did not export a usable model"
    resumed = dataclasses.replace(split, resume=True)
    second = train(WorldStage(resumed), resumed, progress=False)
    assert second["step"] == 6 and second["steps_this_run"] == 3
    assert_same_params(final_state(tmp_path / "a"), final_state(tmp_path / "b"), atol=1e-6)
    # The exported world loads and plays.
    wm = WorldModel.from_pretrained(tmp_path / "b" / "world")
    wm.reset(seed=0)
    assert wm.step([1]).frames.shape == (1, 16, 16, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process(tmp_path, data, autoencoder_dir):
    single = world_cfg(data, autoencoder_dir, tmp_path / "one", steps=3)
    train(WorldStage(single), single, progress=False)
    double = dataclasses.replace(single, out=str(tmp_path / "two"))
    torch.multiprocessing.spawn(ddp_worker, args=(2, _free_port(), dataclasses.asdict(double)), nprocs=2, join=True)
    # Gradients are averaged in a different order across processes: equal up to float rounding.
    assert_same_params(final_state(tmp_path / "one"), final_state(tmp_path / "two"), atol=1e-5)


def test_autoencoder_overfits_a_tiny_dataset(tmp_path, data):
    cfg = with_preset(
        AutoencoderTrainConfig,
        "autoencoder",
        "tiny",
        dict(
            data=str(data),
            out=str(tmp_path / "run"),
            frame_size="16x16",
            steps=60,
            lr=3e-3,
            workers=0,
            precision="fp32",
            ema_decay=0.9,
        ),
    )
    stage = AutoencoderStage(cfg)
    frames = torch.stack([stage.dataset[i]["frames"][0] for i in range(0, len(stage.dataset), 3)])

    def recon_error(ae: FrameAutoencoder) -> float:
        return (ae.decode(ae.encode(frames)).float() - frames.float()).abs().mean().item()

    before = recon_error(stage.model.eval())
    train(stage, cfg, progress=False)
    _, _, trained = load_trained_autoencoder(tmp_path / "run")
    after = recon_error(trained)
    assert after < before / 3, f"reconstruction error {before:.1f} -> {after:.1f}"
    assert abs(trained.encode(frames).std().item() - 1.0) < 0.5, "latent_scale does not bring latents near unit std"


def test_autoencoder_export_measures_heldout_reconstruction(tmp_path, data):
    """With --holdout, every export writes the held-out reconstruction PSNR of the exported (EMA) weights."""
    overrides = dict(data=str(data), out=str(tmp_path / "run"), frame_size="16x16", steps=8, workers=0, holdout=1)
    cfg = with_preset(AutoencoderTrainConfig, "autoencoder", "tiny", {**overrides, "precision": "fp32"})
    stage = AutoencoderStage(cfg)
    reader, episodes = stage.sources[0]
    assert episodes == [0, 1]  # episode 2 is held out
    train(stage, cfg, progress=False)
    metrics = json.loads((tmp_path / "run" / "autoencoder" / "metrics.json").read_text())
    assert metrics["step"] == 8 and metrics["frames"] == 10  # all 10 frames of the 9-step held-out episode
    _, _, exported = load_trained_autoencoder(tmp_path / "run")
    frames = torch.from_numpy(reader.frames(2))
    mse = (exported.decode(exported.encode(frames)).double() - frames.double()).pow(2).mean(dim=(1, 2, 3))
    assert metrics["heldout_psnr"] == pytest.approx((10 * torch.log10(255.0**2 / mse)).mean().item(), abs=1e-3)


def test_one_autoencoder_for_several_files_and_from_a_trained_one(tmp_path, data):
    """Comma-separated --data trains one autoencoder on every file's frames (at --frame-size), held-out episodes of
    each measured; --init starts from a trained autoencoder's weights and shape."""
    other = tmp_path / "other.h5"
    write_dataset(other, lengths=(6, 7), size=24, action_space=gym.spaces.Box(-1, 1, (2,)))  # other actions
    base = dict(frame_size="16x16", workers=0, holdout=1, precision="fp32", save_minutes=1e6)
    cfg = with_preset(
        AutoencoderTrainConfig, "autoencoder", "tiny", {**base, "data": f"{data},{other}", "out": str(tmp_path / "a")}
    )
    stage = AutoencoderStage(cfg)
    assert len(stage.dataset) == 15 + 21 + 7  # training frames of both files: episodes 0-1 and episode 0
    train(stage, cfg, progress=False)
    metrics = json.loads((tmp_path / "a" / "autoencoder" / "metrics.json").read_text())
    assert metrics["frames"] == 10 + 8  # the held-out episode of each file
    again = with_preset(
        AutoencoderTrainConfig,
        "autoencoder",
        "tiny",
        {**base, "data": str(other), "out": str(tmp_path / "b"), "init": str(tmp_path / "a"), "widths": "4,4,4"},
    )
    started = AutoencoderStage(again)
    _, _, trained = load_trained_autoencoder(tmp_path / "a")
    assert all(torch.equal(a, b) for a, b in zip(started.model.state_dict().values(), trained.state_dict().values()))


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    last = err.splitlines()[-1]
    assert needle in last, err
    assert "Traceback" not in err


def test_cli_errors_are_one_line_and_overwrite_nothing(tmp_path, capsys, data, autoencoder_dir):
    out = tmp_path / "run"
    args = ["train", "world", "--preset", "tiny", "--autoencoder", str(autoencoder_dir), "--out", str(out)]
    assert_one_line_error(*run_cli(capsys, *args, "--data", str(tmp_path / "missing.h5")), "does not exist")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    assert_one_line_error(*run_cli(capsys, *args, "--data", str(tmp_path / "junk.h5")), "not an HDF5 file")
    assert_one_line_error(*run_cli(capsys, *args, "--data", str(data), "--clip-frames", "64"), "shorter than a clip")
    assert_one_line_error(*run_cli(capsys, *args, "--data", str(data), "--resume"), "nothing to resume")

    # A checkpoint with another action space cannot be fine-tuned on this data.
    other = WorldModel(
        dataclasses.replace(load_world_config(autoencoder_dir), action=ActionSpec.from_gym(gym.spaces.Box(-1, 1, (2,))))
    )
    other.save_pretrained(tmp_path / "other")
    code, err = run_cli(capsys, *args, "--data", str(data), "--init", str(tmp_path / "other"))
    assert_one_line_error(code, err, "action space is Box")

    # An existing run is never overwritten without --resume.
    code, _ = run_cli(capsys, *args, "--data", str(data), "--steps", "2", "--workers", "0")
    assert code == 0
    state = (out / "state" / "world.pt").read_bytes()
    assert_one_line_error(*run_cli(capsys, *args, "--data", str(data)), "already holds a world run")
    assert (out / "state" / "world.pt").read_bytes() == state


def test_resuming_a_finished_run_says_so_and_writes_nothing(tmp_path, capsys, data, autoencoder_dir):
    out = tmp_path / "run"
    args = ["train", "world", "--preset", "tiny", "--data", str(data), "--autoencoder", str(autoencoder_dir)]
    args += ["--out", str(out), "--steps", "2", "--workers", "0", "--precision", "fp32"]
    assert run_cli(capsys, *args)[0] == 0
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, err = run_cli(capsys, *args, "--resume")
    assert_one_line_error(code, err, f"the run in {out} is already at step 2 of --steps 2; raise --steps to train")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files


def load_world_config(autoencoder_dir):
    from worldsim.config import WorldConfig, dit_config

    frame_size, ae_cfg, _ = load_trained_autoencoder(autoencoder_dir)
    return WorldConfig(
        frame_size=frame_size,
        autoencoder=ae_cfg,
        dit=dit_config("XS", max_frames=4),
        sampler=dataclasses.replace(WorldConfig().sampler, window=3),
    )


def test_init_from_a_world_with_another_autoencoder_keeps_the_transformer(tmp_path, data, autoencoder_dir, capsys):
    """--init onto a new latent space: the blocks, conditioning and heads carry over; the layers that read and
    write latents (their shapes follow the latent channels) start fresh."""
    train(
        WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "old", steps=2)),
        world_cfg(data, autoencoder_dir, tmp_path / "old", steps=2),
        progress=False,
    )
    wider = dataclasses.replace(TINY_AE, latent_channels=8)
    save_autoencoder(tmp_path / "ae8", [16, 16], dataclasses.asdict(wider), FrameAutoencoder(wider).state_dict())
    cfg = world_cfg(data, tmp_path / "ae8", tmp_path / "new", steps=1, init=str(tmp_path / "old" / "world"))
    stage = WorldStage(cfg)
    assert "patch embedding and output start fresh" in capsys.readouterr().err
    old = WorldModel.from_pretrained(tmp_path / "old" / "world").dit.state_dict()
    new = stage.model.state_dict()
    assert new["patch_in.weight"].shape[1] == 2 * old["patch_in.weight"].shape[1]
    assert torch.equal(new["blocks.0.attn.qkv.weight"], old["blocks.0.attn.qkv.weight"])
    assert torch.equal(new["action_embed.tables.0.weight"], old["action_embed.tables.0.weight"])
    assert not new["patch_out.weight"].any()  # zero-initialised like any fresh DiT output


def test_a_world_gets_its_source_env_keys_and_a_fine_tuned_one_keeps_its_name(tmp_path, autoencoder_dir):
    """Arrow keys come with worlds trained on CarRacing data (the source adapter's key_map); --init keeps the name
    (the Gymnasium id) and keys of the world it starts from, whatever the data's env is called."""
    racing = tmp_path / "racing.h5"
    write_dataset(racing, lengths=(14, 20, 9), size=16, env_id="CarRacing-v3")
    fresh = WorldStage(world_cfg(racing, autoencoder_dir, tmp_path / "fresh", steps=1))
    assert fresh.config.key_map == {"up": 3, "down": 4, "left": 2, "right": 1}
    assert fresh.config.name == "carracing"
    plain = WorldStage(world_cfg(racing, autoencoder_dir, tmp_path / "plain", steps=1, name="Racer"))
    plain.config.key_map = {"space": 3}
    plain.world_model(plain.model).save_pretrained(tmp_path / "racer")
    tuned = WorldStage(world_cfg(racing, autoencoder_dir, tmp_path / "tuned", steps=1, init=str(tmp_path / "racer")))
    assert (tuned.config.name, tuned.config.key_map) == ("Racer", {"space": 3})


def test_default_patch_keeps_a_token_at_16_pixels(tmp_path, data, autoencoder_dir):
    """--patch 0 picks the patch from the autoencoder: one token covers 16x16 pixels (the tiny autoencoder has
    factor 2, so patch 8: one token per 16x16 frame); a given --patch is kept."""
    auto = WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "a", patch=0))
    assert auto.config.dit.patch * auto.config.autoencoder.factor == 16 and auto.tokens_per_sample == 4  # 4 frames
    assert WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "b", patch=4)).config.dit.patch == 4


def test_world_training_with_captions_builds_a_text_world(tmp_path, autoencoder_dir):
    data = tmp_path / "captioned.h5"
    write_dataset(data, lengths=(10, 12), size=16, captions=True)
    cfg = world_cfg(data, autoencoder_dir, tmp_path / "run", steps=2)
    stage = WorldStage(cfg)
    assert stage.config.dit.text_dim == 384 and stage.text_encoder is not None
    result = train(stage, cfg, progress=False)
    assert result["step"] == 2 and all(torch.isfinite(torch.tensor(v)) for v in result["final_metrics"].values())
    wm = WorldModel.from_pretrained(tmp_path / "run" / "world")
    wm.reset(seed=0, text="episode 1")
    assert wm.step([2]).frames.shape == (1, 16, 16, 3)


def test_own_context_makes_the_context_after_the_real_start_and_keeps_the_targets(tmp_path, data, autoencoder_dir):
    """--own-context: in the chosen teacher-forced clips the context frames after the first real ones are the
    model's own rollout; the real start and the target frames (from the split on) stay recorded; other clips are
    untouched; the same draw gives the same clip."""
    cfg = world_cfg(data, autoencoder_dir, tmp_path / "w", own_context=1.0, own_context_from=1, clip_frames=4)
    stage = WorldStage(cfg)
    batch = torch.utils.data.default_collate([stage.dataset[i] for i in range(4)])
    clip = stage.clip_batch(stage.model, batch)
    T, shape = clip.latents.shape[1], tuple(clip.latents.shape[2:])
    g = torch.Generator().manual_seed(0)
    draw = draw_forcing_noise(4, T, shape, stage.loss_config, g)
    draw.is_context[:] = torch.tensor(
        [[True, True, True, False], [True, False, False, False], [False] * 4, [True, True, False, False]]
    )
    own = torch.tensor([True, True, True, False])
    context_noise, noise = torch.randn(2, 4, T, *shape, generator=g)
    made, share = stage._with_own_context(stage.model, clip, draw, own, context_noise, noise)
    x, y = clip.latents, made.latents
    assert share == 0.25  # only row 0 has own context after frame 1 (row 1's context is its real start alone)
    assert torch.equal(y[0, :1], x[0, :1]) and torch.equal(y[0, 3:], x[0, 3:])
    assert (y[0, 1:3] - x[0, 1:3]).abs().mean() > 1e-3
    assert torch.equal(y[1:], x[1:])
    again, _ = stage._with_own_context(stage.model, clip, draw, own, context_noise, noise)
    torch.testing.assert_close(again.latents, y)
    result = train(stage, cfg, progress=False)  # and the loop trains with it
    assert result["step"] == cfg.steps


def test_a_fine_tuned_world_keeps_its_sampler(tmp_path, data, autoencoder_dir):
    base = WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "base", steps=1))
    base.config.sampler = dataclasses.replace(base.config.sampler, steps=2, shift=0.5)
    base.world_model(base.model).save_pretrained(tmp_path / "two_step")
    tuned = WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "tuned", steps=1, init=str(tmp_path / "two_step")))
    assert (tuned.config.sampler.steps, tuned.config.sampler.shift) == (2, 0.5)
    with pytest.raises(InputError, match="own-context-from"):
        WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "bad", own_context=0.5, own_context_from=9))


def test_motion_weights_weigh_what_changed_and_leave_the_rest_at_one():
    """The flow loss's motion weights: 1 where a latent pixel did not change from the frame before (and on a clip's
    first frame), 1 + strength at the frame's largest change, in between in proportion."""
    x = torch.zeros(2, 3, 4, 5, 5)
    x[:, 1:, :, 2, 2] = 1.0  # appears in frame 1, then stays: changes only into frame 1
    x[:, 2, :, 0, 4] = 0.5  # a smaller change into frame 2
    x[:, 2, :, 1, 1] = -1.0  # the largest change into frame 2
    w = motion_weights(x, 3.0)
    assert w.shape == (2, 3, 1, 5, 5)
    assert torch.equal(w[:, 0], torch.ones_like(w[:, 0]))  # first frame: no frame before
    assert w[0, 1, 0, 2, 2] == 4.0 and (w[0, 1] == 1.0).sum() == 24
    assert w[0, 2, 0, 1, 1] == 4.0 and w[0, 2, 0, 0, 4] == 2.5 and w[0, 2, 0, 2, 2] == 1.0


def test_motion_weight_makes_an_error_where_things_moved_cost_more(tmp_path, data, autoencoder_dir):
    """The same squared error costs more in the loss on a moving latent pixel than on a still one when
    --motion-weight is set, and the same anywhere when it is 0."""
    stage = WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "w", clip_frames=4))
    batch = torch.utils.data.default_collate([stage.dataset[i] for i in range(2)])
    clip = stage.clip_batch(stage.model, batch)
    latents = torch.zeros_like(clip.latents)
    latents[:, 1:, :, 0, 0] = 1.0  # one latent pixel changes into frame 1
    clip = dataclasses.replace(clip, latents=latents, rewards=None, terminations=None)
    draw = draw_forcing_noise(2, 4, tuple(latents.shape[2:]), stage.loss_config, torch.Generator().manual_seed(0))
    draw.is_context[:] = False

    def loss_with_error_at(pixel: tuple[int, int], strength: float) -> float:
        class Net(torch.nn.Module):  # predicts the exact velocity, off by 1 at one latent pixel of frame 1
            def forward(self, noisy, levels, *rest):
                velocity = velocity_target(latents, draw.noise).clone()
                velocity[:, 1, :, pixel[0], pixel[1]] += 1.0
                return SimpleNamespace(velocity=velocity)

        cfg = dataclasses.replace(stage.loss_config, motion_weight=strength)
        return diffusion_forcing_loss(Net(), clip, cfg, draw=draw)[0].item()

    assert loss_with_error_at((0, 0), 0.0) == pytest.approx(loss_with_error_at((1, 1), 0.0))
    assert loss_with_error_at((0, 0), 4.0) > 2 * loss_with_error_at((1, 1), 4.0)
    with pytest.raises(InputError, match="motion-weight"):
        WorldStage(world_cfg(data, autoencoder_dir, tmp_path / "bad", motion_weight=-1.0))
