"""Text-to-video pretraining: the world model's own DiT, trained on captioned clips with no actions.

The same ``DiT`` class and size registry as ``train world``; every frame has the null action, the prompt comes in
through cross-attention to the frozen MiniLM (dropped for 10% of the clips, for classifier-free guidance). One run
mixes sources at their native frame sizes (each file is a bucket: a batch holds clips of one size, RoPE takes any
grid) and mixes single frames (images) into the clips. The result is exported as a checkpoint with
``text_to_video`` set; ``worldsim train world --init RUN`` then gives it actions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from worldsim.config import ActionSpec, SamplerConfig, WorldConfig, dit_config
from worldsim.data.reader import TrajectoryReader
from worldsim.engine import WorldModel
from worldsim.errors import ConfigError, InputError
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.models.conditioning import TextEncoder
from worldsim.models.dit import DiT
from worldsim.training.autoencoder import load_trained_autoencoder
from worldsim.training.common import (
    BucketedClips,
    add_rollout,
    cached_latents,
    captioned_part,
    open_captioned,
    share_weights,
)
from worldsim.training.config import TextToVideoTrainConfig
from worldsim.training.loop import Distributed
from worldsim.training.objectives import ClipBatch, LossConfig, diffusion_forcing_loss, draw_forcing_noise
from worldsim.training.world import EXPORT_DIR, PIXELS_PER_TOKEN

NO_ACTIONS = ActionSpec(kind="discrete", n=1)
"""The backbone's action space: one action it never sees (every frame is null); a world replaces the embedding."""
SAMPLE_FRAMES = 16
TEXT_CFG = 3.0
"""The guidance scale on the prompt a backbone is sampled with (its ``sampler.text_cfg``: `generate`, `eval-text` and
`play` read it); a world with actions keeps 1, one pass a step at play."""


class TextToVideoStage:
    name = "t2v"

    def __init__(self, cfg: TextToVideoTrainConfig, d: Distributed | None = None) -> None:
        d = d or Distributed()
        self.cfg = cfg
        if not 0.0 <= cfg.image_share < 1.0:
            raise InputError(f"--image-share must be in [0, 1), got {cfg.image_share}")
        sources = open_captioned(cfg)
        if not cfg.autoencoder:
            raise InputError("--autoencoder is required: a trained autoencoder (worldsim train autoencoder)")
        _, ae_config, self.autoencoder = load_trained_autoencoder(cfg.autoencoder)
        self.autoencoder.to(d.device)
        patch = cfg.patch or max(1, PIXELS_PER_TOKEN // ae_config.factor)
        check_frame_sizes(sources, ae_config.factor * patch)
        reference = sources[0][0]
        try:
            self.config = WorldConfig(
                frame_size=list(sources[0][0].frame_shape[:2]),
                frame_rate=reference.frame_rate,
                action=NO_ACTIONS,
                autoencoder=ae_config,
                dit=dit_config(cfg.model_size, max_frames=cfg.clip_frames, text_dim=TextEncoder.dim, patch=patch),
                sampler=SamplerConfig(
                    window=min(SamplerConfig().window, cfg.clip_frames - SamplerConfig().sinks), text_cfg=TEXT_CFG
                ),
                name="text-to-video",
                text_to_video=True,
            )
        except ConfigError as e:
            raise InputError(str(e)) from None
        torch.manual_seed(cfg.seed)
        self.model = DiT(self.config.dit, NO_ACTIONS, ae_config.latent_channels)
        if cfg.init:
            init = WorldModel.from_pretrained(cfg.init)
            if not init.config.text_to_video:
                raise InputError(f"--init {cfg.init} is a world, not a text-to-video checkpoint")
            self.model.load_state_dict(init.dit.state_dict())
        self.dataset = captioned_clips(sources, self.autoencoder, Path(cfg.out), cfg.clip_frames, cfg.image_share, d)
        self.sources = sources
        self.text_encoder = TextEncoder(d.device)
        self.loss_config = LossConfig()
        h, w = self.config.latent_size
        self.tokens_per_sample = cfg.clip_frames * (h // patch) * (w // patch)

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator, rows: slice, global_batch: int
    ) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        latents = batch["latents"].to(device)
        B, T = latents.shape[:2]
        draw = draw_forcing_noise(global_batch, T, tuple(latents.shape[2:]), self.loss_config, generator).rows(rows)
        clip = ClipBatch(
            latents=latents,
            actions=None,
            action_null=torch.ones(B, T, dtype=torch.bool, device=device),
            text=self.text_encoder(list(batch["caption"])),
        )
        return diffusion_forcing_loss(model, clip, self.loss_config, draw=draw)

    def world_model(self, ema: nn.Module) -> WorldModel:
        dit = DiT(self.config.dit, NO_ACTIONS, self.config.autoencoder.latent_channels)
        dit.load_state_dict({k: v.detach().float().cpu() for k, v in ema.state_dict().items()})
        ae = FrameAutoencoder(self.config.autoencoder)
        ae.load_state_dict({k: v.cpu() for k, v in self.autoencoder.state_dict().items()})
        return WorldModel(self.config, ae, dit)

    def export(self, ema: nn.Module, out: Path, card: dict[str, Any]) -> None:
        files = "\n".join(
            f"- `{r.source}`: {r.env_id}, {len(e)} episodes at {r.frame_shape[0]}x{r.frame_shape[1]}"
            for r, e in self.sources
        )
        model_card = (
            "# text-to-video backbone\n\nTrained by `worldsim train t2v` on captioned clips with no actions:\n\n"
            f"{files}\n\n- model size: {self.cfg.model_size}, clip {self.cfg.clip_frames} frames, "
            f"{self.cfg.image_share:.0%} of steps on single frames\n"
            f"- steps: {card['step']}, wall time: {card['wall_seconds']} s\n\n"
            f"Start a world from it: `worldsim train world --init {out} ...`\n"
        )
        self.world_model(ema).save_pretrained(out / EXPORT_DIR, card=model_card)

    @torch.no_grad()
    def log_samples(self, ema: nn.Module, tb: Any, step: int) -> None:
        log_text_rollouts(tb, self.world_model(ema), self.sources, step)


def check_frame_sizes(sources: list[tuple[TrajectoryReader, list[int]]], step: int) -> None:
    """Every file's frames split into whole tokens: ``step`` = autoencoder factor x patch divides both sides."""
    for reader, _ in sources:
        h, w = reader.frame_shape[:2]
        if h % step or w % step:
            raise InputError(f"{reader.source}: frames of {h}x{w} are not divisible by {step} (autoencoder factor x "
                             "patch); record it with a --size that is")  # fmt: skip


def captioned_clips(
    sources: list[tuple[TrajectoryReader, list[int]]],
    autoencoder: FrameAutoencoder,
    out: Path,
    frames: int,
    image_share: float,
    d: Distributed,
) -> BucketedClips:
    """Clips of every captioned file at its own frame size (a bucket each), latents cached under ``out``, plus
    single frames for ``image_share`` of the steps."""
    parts, is_image = [], []
    for i, (reader, episodes) in enumerate(sources):
        latents = cached_latents(reader, autoencoder, out / f"latents_{i}.h5", tuple(reader.frame_shape[:2]), d)
        parts.append(captioned_part(reader, episodes, frames, latents))
        is_image.append(False)
        if image_share > 0:
            parts.append(captioned_part(reader, episodes, 1, latents))
            is_image.append(True)
    return BucketedClips(parts, share_weights(parts, is_image, image_share))


@torch.no_grad()
def log_text_rollouts(tb: Any, wm: WorldModel, sources: list[tuple[TrajectoryReader, list[int]]], step: int) -> None:
    """A real clip of each source beside the model's continuation of its first frame under its caption."""
    for reader, episodes in sources:
        e = episodes[0]
        n = min(reader.episode_frames[e], SAMPLE_FRAMES + 1)
        real = reader.frames(e, 0, n)
        wm.set_frame_size(real.shape[1:3])
        wm.reset(frames=real[None, :1], seed=0, text=reader.caption(e, 0, n))
        dream = wm.predict(np.zeros((1, n - 1), dtype=np.int64)).frames[0] if n > 1 else real[:0]
        add_rollout(tb, f"t2v/{reader.env_id or 'data'}", np.concatenate([real[1:n], dream], axis=2), step)
