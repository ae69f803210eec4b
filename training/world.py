"""Stage 2: train the DiT world model (diffusion forcing + reward/termination heads, optional captions)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from worldsim.checkpoint import load_checkpoint, load_config, load_state, strip_prefix
from worldsim.config import ActionSpec, SamplerConfig, WorldConfig, dit_config
from worldsim.data.clips import ClipDataset
from worldsim.data.compat import check_data_matches_world, data_action_spec
from worldsim.data.reader import TrajectoryReader
from worldsim.engine import WorldModel
from worldsim.envs.sources import source_world
from worldsim.errors import ConfigError, InputError
from worldsim.inputs import resize_frames
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.models.conditioning import TextContext, TextEncoder
from worldsim.models.dit import DiT
from worldsim.training.autoencoder import load_trained_autoencoder
from worldsim.training.common import (
    BucketedClips,
    add_rollout,
    cached_latents,
    captioned_part,
    open_captioned,
    open_training_data,
    share_weights,
)
from worldsim.training.config import WorldTrainConfig
from worldsim.training.loop import Distributed
from worldsim.training.objectives import (
    ClipBatch,
    ForcingNoise,
    LossConfig,
    diffusion_forcing_loss,
    draw_forcing_noise,
    own_rollout,
)
from worldsim.training.state import StateClips, StateFeatures, episode_features
from worldsim.worlds import resolve_world

EXPORT_DIR = "world"
PIXELS_PER_TOKEN = 16
"""Side in pixels of the square a DiT token covers by default (``--patch 0``): 16 tokens per 64x64 frame, the
budget that keeps the shipped world real-time on a 2-core CPU."""
LATENT_IO = ("patch_in.", "patch_out.")
"""DiT layers whose shapes follow the autoencoder's latent channels and patch."""
ACTION_EMBEDDING = "action_embed."
STATE_HEAD = "state_head."
START_CONTEXTS = 16
"""Start contexts shipped with the exported world (first frames of training episodes)."""
START_FRAMES = 4
SAMPLE_FRAMES = 32
"""Length of the TensorBoard sample rollout."""


class WorldStage:
    name = "world"

    def __init__(self, cfg: WorldTrainConfig, d: Distributed | None = None) -> None:
        d = d or Distributed()
        self.cfg = cfg
        self.reader, episodes = open_training_data(cfg)
        action = data_action_spec(self.reader)
        init_config, init_state = None, None
        if cfg.init:
            init_path = resolve_world(cfg.init)
            init_config = load_config(init_path)
            if not init_config.text_to_video:  # a backbone has no actions, env or frame rate to match
                check_data_matches_world(self.reader, init_config, cfg.init, "fine-tune")  # before any weights
            _, init_state, _ = load_checkpoint(init_path)
        frame_size, ae_config, self.autoencoder = load_trained_autoencoder(cfg.autoencoder or cfg.out)
        self.autoencoder.to(d.device)
        # A world started from a text backbone keeps its text path (prompts still steer it), captions or not.
        has_text = self.reader.captions or cfg.text_data or (init_config and init_config.dit.text_dim)
        text_dim = TextEncoder.dim if has_text else 0
        sinks = SamplerConfig().sinks
        init_world = init_config if init_config and not init_config.text_to_video else None
        self.state_spec, self.frame_state = self._object_state(cfg, episodes)
        state_dim, state = (
            (len(self.state_spec.names), dataclasses.asdict(self.state_spec))
            if self.state_spec and cfg.state_weight
            else (init_world.dit.state_dim, init_world.state) if init_world else (0, {})
        )
        try:
            self.config = WorldConfig(
                frame_size=list(frame_size),
                frame_rate=self.reader.frame_rate,
                action=action,
                autoencoder=ae_config,
                dit=dit_config(
                    cfg.model_size,
                    max_frames=cfg.clip_frames,
                    text_dim=text_dim,
                    patch=cfg.patch or max(1, PIXELS_PER_TOKEN // ae_config.factor),
                    action_point=init_world.dit.action_point if init_world else _action_point(self.reader, action),
                    state_dim=state_dim,
                ),
                state=state,
                # A fine-tuned world keeps the sampler it was tuned to (its steps and shift), within the new clips.
                sampler=dataclasses.replace(
                    init_world.sampler if init_world else SamplerConfig(),
                    window=min((init_world.sampler if init_world else SamplerConfig()).window, cfg.clip_frames - sinks),
                ),
                # A fine-tuned world keeps the name (its Gymnasium id) and keys of the world it starts from.
                name=cfg.name or (init_world.name if init_world else _world_name(self.reader.env_id)),
                key_map=dict(init_world.key_map) if init_world else dict(source_world(self.reader.env_id).key_map),
                # Data that records no env id keeps the env of the world it fine-tunes.
                source_env=self.reader.env_id or (init_world.source_env if init_world else ""),
            )
        except ConfigError as e:
            raise InputError(str(e)) from None
        if not 0.0 <= cfg.own_context <= 1.0:
            raise InputError(f"--own-context {cfg.own_context} must be a share in [0, 1]")
        if not 1 <= cfg.own_context_from < cfg.clip_frames - 1:
            raise InputError(
                f"--own-context-from {cfg.own_context_from} must be in 1..{cfg.clip_frames - 2} (real frames before the"
                " model's own, with at least one target frame after them)"
            )
        if cfg.motion_weight < 0:
            raise InputError(f"--motion-weight {cfg.motion_weight} must be 0 or more")
        torch.manual_seed(cfg.seed)
        self.model = DiT(self.config.dit, action, ae_config.latent_channels)
        if init_state is not None:
            dit_state = strip_prefix(init_state, "dit.")
            if init_config is not None and (
                init_config.autoencoder != ae_config or init_config.dit.patch != self.config.dit.patch
            ):
                dit_state = self._transfer_to_new_latents(dit_state, init_config)
            if init_config is not None and init_config.text_to_video:
                dit_state = self._fresh_actions(dit_state)
            if self.model.state_head is not None and not any(k.startswith(STATE_HEAD) for k in dit_state):
                dit_state = self._fresh_state_head(dit_state)
            load_state(self.model, dit_state, cfg.init)
        latents = None
        if cfg.latent_cache:
            latents = cached_latents(self.reader, self.autoencoder, Path(cfg.out) / "latents.h5", tuple(frame_size), d)
        self.clips = ClipDataset(self.reader, cfg.clip_frames, tuple(frame_size), episodes=episodes, latents=latents)
        if cfg.text_data:
            self.dataset = self._with_text_clips(cfg, d)
        elif self.frame_state:
            self.dataset = StateClips(self.clips, self.frame_state, cfg.moving_share)
        else:
            self.dataset = self.clips
        self.text_encoder = TextEncoder(d.device) if text_dim else None
        self.loss_config = LossConfig(motion_weight=cfg.motion_weight, state_weight=cfg.state_weight)
        h, w = self.config.latent_size
        self.latent_shape = (ae_config.latent_channels, h, w)
        self.tokens_per_sample = cfg.clip_frames * (h // self.config.dit.patch) * (w // self.config.dit.patch)
        self.starts = self._start_contexts(episodes)

    def _object_state(
        self, cfg: WorldTrainConfig, episodes: list[int]
    ) -> tuple[StateFeatures | None, dict[int, np.ndarray]]:
        """The recorded object state of the training episodes when a state lever asks for it (``training.state``)."""
        if cfg.state_weight < 0:
            raise InputError(f"--state-weight {cfg.state_weight} must be 0 or more")
        if not 0.0 <= cfg.moving_share < 1.0:
            raise InputError(f"--moving-share {cfg.moving_share} must be a share in [0, 1)")
        if not (cfg.state_weight or cfg.moving_share):
            return None, {}
        keys = source_world(self.reader.env_id).object_state
        if not keys:
            raise InputError(
                f"--state-weight/--moving-share need the object state of the data's source, and "
                f"{self.reader.env_id or 'data with no env id'} names none (SourceWorld.object_state)"
            )
        if cfg.text_data:
            raise InputError("--state-weight/--moving-share do not mix with --text-data: drop one")
        return episode_features(self.reader, episodes, keys, cfg.data)

    def _fresh_state_head(self, dit_state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A world gaining a state head: the head starts fresh (at the features' mean), every other weight loaded."""
        fresh = {k: v for k, v in self.model.state_dict().items() if k.startswith(STATE_HEAD)}
        print(f"--init {self.cfg.init}: a new state head for {', '.join(self.state_spec.names)}", file=sys.stderr)
        return {**dit_state, **fresh}

    def _with_text_clips(self, cfg: WorldTrainConfig, d: Distributed) -> BucketedClips:
        """The world's clips and, ``text_share`` of the steps, text-only clips of captioned files (no actions, no
        rewards), each file its own bucket (its own frame size)."""
        if not cfg.latent_cache:
            raise InputError("--text-data needs the latent cache: drop --no-latent-cache")
        if not 0.0 < cfg.text_share < 1.0:
            raise InputError(f"--text-share must be in (0, 1), got {cfg.text_share}")
        parts: list[Any] = [self.clips]
        text_cfg = dataclasses.replace(cfg, data=cfg.text_data, holdout=cfg.text_holdout)
        for i, (reader, episodes) in enumerate(open_captioned(text_cfg, "--text-holdout")):  # type: ignore[arg-type]
            size = tuple(reader.frame_shape[:2])
            latents = cached_latents(reader, self.autoencoder, Path(cfg.out) / f"latents_text_{i}.h5", size, d)
            parts.append(TextOnly(captioned_part(reader, episodes, cfg.clip_frames, latents)))
        return BucketedClips(parts, share_weights(parts, [False] + [True] * (len(parts) - 1), cfg.text_share))

    def _transfer_to_new_latents(self, dit_state: dict[str, Tensor], init: WorldConfig) -> dict[str, Tensor]:
        """Fine-tuning onto another autoencoder or another patch size: the layers that read and write latents (patch
        embedding and output) start fresh, everything else (blocks, conditioning, heads) carries over. The tokens are
        new, but what the transformer learned about time, actions and rewards is a better start than noise (rotary
        positions are relative, so a finer grid of tokens reads them the same way); any other mismatch (model size,
        clip length) is still an error from the strict load."""
        old, new = init.autoencoder, self.config.autoencoder
        fresh = self.model.state_dict()
        state = {k: v for k, v in dit_state.items() if not k.startswith(LATENT_IO)}
        state.update({k: v for k, v in fresh.items() if k.startswith(LATENT_IO)})
        print(
            f"--init {self.cfg.init}: other tokens ({old.latent_channels} -> {new.latent_channels} latent channels, "
            f"factor {old.factor} -> {new.factor}, patch {init.dit.patch} -> {self.config.dit.patch}): the patch "
            "embedding and output start fresh, the "
            f"other {len(state) - sum(k.startswith(LATENT_IO) for k in state)} tensors carry over",
            file=sys.stderr,
        )
        return state

    def _fresh_actions(self, dit_state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Starting from a text-to-video backbone: a new action embedding for the data's action space, everything
        else (blocks, text path, patch embedding, heads) loaded."""
        fresh = {k: v for k, v in self.model.state_dict().items() if k.startswith(ACTION_EMBEDDING)}
        print(
            f"--init {self.cfg.init}: a text-to-video backbone; a new action embedding for {self.config.action.kind} "
            "actions, every other weight loaded",
            file=sys.stderr,
        )
        return {**{k: v for k, v in dit_state.items() if not k.startswith(ACTION_EMBEDDING)}, **fresh}

    def _start_contexts(self, episodes: list[int]) -> dict[str, Tensor]:
        chosen = [e for e in episodes if self.reader.episode_frames[e] >= START_FRAMES][:START_CONTEXTS]
        frames = [torch.from_numpy(self.reader.frames(e, 0, START_FRAMES)) for e in chosen]

        return {"frames": resize_frames(torch.stack(frames), tuple(self.config.frame_size))} if frames else {}

    def clip_batch(self, model: nn.Module, batch: dict[str, Any]) -> ClipBatch:
        device = next(model.parameters()).device
        if "latents" in batch:
            latents = batch["latents"].to(device)
        else:
            with torch.no_grad():
                latents = self.autoencoder.encode(batch["frames"].to(device)).float().clone()
        text = None
        if self.text_encoder is not None and "caption" in batch:  # no captions: the null prompt
            text = self.text_encoder(list(batch["caption"]))
        if "text_only" in batch:  # a captioned clip of another source: no actions, no rewards to learn
            B, T = latents.shape[:2]
            return ClipBatch(latents, None, torch.ones(B, T, dtype=torch.bool, device=device), text=text)
        return ClipBatch(
            latents=latents,
            actions=batch["actions"].to(device),
            action_null=batch["action_null"].to(device),
            rewards=batch["rewards"].to(device),
            terminations=batch["terminations"].to(device),
            text=text,
            state=batch["state"].to(device) if "state" in batch else None,
        )

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator, rows: slice, global_batch: int
    ) -> tuple[Tensor, dict[str, float]]:
        clip = self.clip_batch(model, batch)
        T = clip.latents.shape[1]
        shape = tuple(clip.latents.shape[2:])  # text-only clips may have another frame size
        draw = draw_forcing_noise(global_batch, T, shape, self.loss_config, generator).rows(rows)
        metrics: dict[str, float] = {}
        if self.cfg.own_context > 0:
            # Drawn for the global batch whatever this batch holds, so every rank and step sees the same stream.
            own = (torch.rand(global_batch, generator=generator) < self.cfg.own_context)[rows]
            own_noise = torch.randn(global_batch, 2, T, *shape, generator=generator)[rows]  # context, frame
            if clip.actions is not None:
                clip, share = self._with_own_context(model, clip, draw, own, *own_noise.unbind(1))
                metrics["own_context"] = share
        loss, out = diffusion_forcing_loss(model, clip, self.loss_config, draw=draw)
        return loss, out | metrics

    def _with_own_context(
        self, model: nn.Module, clip: ClipBatch, draw: ForcingNoise, own: Tensor, context_noise: Tensor, noise: Tensor
    ) -> tuple[ClipBatch, float]:
        """The clip with the teacher-forced context of the ``own`` rows made by the model itself after the first
        ``own_context_from`` real frames (``own_rollout``); the frames from the split on (the targets) stay
        recorded. Returns it and the share of rows changed."""
        start = self.cfg.own_context_from
        split = draw.is_context.sum(1)  # (B,) context frames of a teacher-forced clip; 0 for the others
        rows = (own & (split > start)).nonzero().flatten().tolist()
        if not rows:
            return clip, 0.0
        device = clip.latents.device
        stop = int(split[rows].max())
        x = clip.latents[rows]
        was_training = model.training
        model.eval()
        made = own_rollout(
            model, x, start, stop, self.config.sampler, context_noise[rows].to(device, x.dtype),
            noise[rows].to(device, x.dtype),
            clip.actions[rows], clip.action_null[rows],
            None if clip.text is None else TextContext(clip.text.tokens[rows], clip.text.mask[rows]),
        )  # fmt: skip
        model.train(was_training)
        own_frames = torch.arange(x.shape[1], device=device)[None, :] < split[rows].to(device)[:, None]  # (b, T)
        latents = clip.latents.clone()
        latents[rows] = torch.where(own_frames[:, :, None, None, None], made, x)
        return dataclasses.replace(clip, latents=latents), len(rows) / len(own)

    def world_model(self, ema: nn.Module) -> WorldModel:
        dit = DiT(self.config.dit, self.config.action, self.config.autoencoder.latent_channels)
        dit.load_state_dict({k: v.detach().float().cpu() for k, v in ema.state_dict().items()})
        ae = FrameAutoencoder(self.config.autoencoder)
        ae.load_state_dict({k: v.cpu() for k, v in self.autoencoder.state_dict().items()})
        return WorldModel(self.config, ae, dit, self.starts)

    @property
    def trained_steps(self) -> int:
        """Steps in the training episodes (the held-out ones left out)."""
        return sum(self.reader.episode_frames[e] - 1 for e in self.clips.episodes)

    def export(self, ema: nn.Module, out: Path, card: dict[str, Any]) -> None:
        model_card = (
            f"# {self.config.name}\n\nTrained by `worldsim train world` on `{self.cfg.data}` "
            f"({len(self.clips.episodes)} episodes, {self.trained_steps} steps, source env "
            f"`{self.reader.env_id}`).\n\n- model size: {self.cfg.model_size}, clip {self.cfg.clip_frames} frames\n"
            f"- steps: {card['step']}, wall time: {card['wall_seconds']} s\n"
        )
        self.world_model(ema).save_pretrained(out / EXPORT_DIR, card=model_card)

    @torch.no_grad()
    def log_samples(self, ema: nn.Module, tb: Any, step: int) -> None:
        log_open_loop(
            tb, self.world_model(ema), self.reader, self.clips.episodes[0], step, self.text_encoder is not None
        )


def log_open_loop(
    tb: Any, wm: WorldModel, reader: TrajectoryReader, episode: int, step: int, text: bool = False
) -> None:
    """TensorBoard: a real episode beside an open-loop rollout from its first frame with the same actions (and with
    ``text`` its caption as the prompt)."""
    n = min(reader.episode_frames[episode], SAMPLE_FRAMES + 1)
    real = torch.from_numpy(reader.frames(episode, 0, n))

    real = resize_frames(real, tuple(wm.config.frame_size)).numpy()
    actions = reader.steps(episode)["actions"][: n - 1]
    prompt = (reader.caption(episode, 0, n) or None) if text else None
    wm.reset(frames=real[None, :1], seed=0, text=prompt)
    dream = wm.predict(actions[None]).frames[0] if n > 1 else real[:0]
    add_rollout(tb, "world/real_vs_dream", np.concatenate([real[1:n], dream], axis=2), step)  # side by side


class TextOnly(Dataset):
    """Captioned clips as text-only items: latents and caption, marked ``text_only`` (their actions are another
    source's)."""

    def __init__(self, clips: ClipDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.clips[index]
        return {"latents": item["latents"], "caption": item["caption"], "text_only": True}


def _action_point(reader: TrajectoryReader, action: ActionSpec) -> bool:
    """Whether the data's source env says its Box(2) action is a point on the frame (``SourceWorld.action_point``)."""
    return source_world(reader.env_id).action_point and action.kind == "box" and action.flat_size == 2


def _world_name(env_id: str) -> str:
    base = env_id.split("/")[-1]
    return re.sub(r"-v\d+$", "", base).lower() or "world"
