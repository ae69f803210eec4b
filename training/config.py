"""Typed training configs: the stages' (with named presets; precedence: dataclass defaults < preset < flags) and
``worldsim rl train``'s."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from worldsim.config import ModelSize
from worldsim.devices import resolve_device
from worldsim.errors import InputError
from worldsim.precision import Precision


@dataclass
class TrainConfig:
    """Settings shared by every training stage."""

    data: str = ""
    """Trajectories: a worldsim .h5 file, a Minari dataset (directory or id), robomimic file or LeRobot dataset dir."""
    out: str = "runs/world"
    """Run directory: checkpoints, TensorBoard logs, the exported model."""
    preset: Literal["tiny", "default", "gpu"] = "default"
    """Named set of defaults: tiny (tests, seconds), default (this CPU), gpu (one big GPU)."""
    steps: int = 20000
    """Optimizer steps in total (a resumed run continues up to this)."""
    batch_size: int = 32
    """Global batch: split evenly across torchrun processes."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    warmup_steps: int = 500
    """Linear warmup steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to norms, biases and embeddings)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    ema_decay: float = 0.999
    """Exponential moving average of the weights; the exported model uses the EMA."""
    precision: Precision = "auto"
    """fp32, bf16 (autocast) or auto (bf16 where it pays: CUDA and CPUs with native bf16)."""
    seed: int = 0
    """Seed of the data order and of all training noise."""
    workers: int = 1
    """DataLoader worker processes per training process."""
    save_minutes: float = 10.0
    """Write a resumable checkpoint at least this often (and on Ctrl-C, and at the end)."""
    log_every: int = 20
    """Steps between TensorBoard scalar writes."""
    max_minutes: float = 0.0
    """Stop (with a checkpoint) after this much wall time; 0 = run to --steps. For runs split across sessions."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (model, optimizer, EMA, step, RNG)."""
    camera: str | None = None
    """Image key to train on for datasets with several (robomimic camera, Minari dict key, LeRobot camera e.g. top)."""
    holdout: int = 0
    """Episodes (the last ones) kept out of training for evaluation."""


@dataclass
class AutoencoderTrainConfig(TrainConfig):
    """Stage 1: the per-frame autoencoder."""

    frame_size: str = "64x64"
    """Frame size HxW the autoencoder works at."""
    latent_channels: int = 8
    """Channels of the latent map."""
    widths: str = "16,32,64,128"
    """Channel width per resolution level (comma-separated); spatial factor = 2^(levels-1)."""
    kl_weight: float = 1e-6
    """Weight of the KL term."""
    init: str = ""
    """Start from this trained autoencoder (its shape replaces --widths / --latent-channels), e.g. to widen one
    source's autoencoder to several."""


@dataclass
class WorldTrainConfig(TrainConfig):
    """Stage 2: the DiT world model, with reward and termination heads (and captions, if any)."""

    autoencoder: str = ""
    """Trained autoencoder: a run directory or checkpoint (or a world checkpoint); default: the one in --out."""
    model_size: ModelSize = "S"
    """DiT size (worldsim.config.DIT_SIZES)."""
    clip_frames: int = 16
    """Frames per training clip (the model's max context)."""
    patch: int = 0
    """Latent patch size of the DiT; 0: 16 / the autoencoder's factor, so one token covers 16x16 pixels whatever
    the autoencoder (2 for factor-8 latents, 4 for factor-4: 16 tokens per 64x64 frame either way)."""
    init: str = ""
    """Start from this checkpoint or run: a world of the same action space (fine-tuning), or a text-to-video
    backbone (``train t2v``: a new action embedding, every other weight loaded)."""
    latent_cache: bool = True
    """Encode the dataset once into <out>/latents.h5 instead of every step."""
    name: str = ""
    """World name stored in the checkpoint (default: from the env id)."""
    text_data: str = ""
    """Captioned files (comma-separated, ``worldsim record --captions``) whose clips are mixed in as text-only clips
    (no actions, no rewards): a world started from a text backbone keeps following text."""
    text_share: float = 0.2
    """Share of the steps on --text-data clips."""
    text_holdout: int = 2
    """Episodes at the end of each --text-data file kept out (as ``train t2v --holdout`` does, so eval-text's
    held-out prompts stay unseen)."""
    own_context: float = 0.0
    """Share of teacher-forced clips whose context is, after the first ``--own-context-from`` real frames, the
    model's own rollout (its sampler, the clip's actions, no gradient) while the targets stay recorded frames: the
    network learns to continue, and correct, the contexts its own dreams give it (self-forcing). 0: all context
    real."""
    own_context_from: int = 1
    """Real frames at the start of an own-context clip."""
    motion_weight: float = 0.0
    """Extra flow-loss weight, up to 1 + this, on the latent pixels that change from the frame before (what the
    action moved); 0: a plain mean over the frame."""
    state_weight: float = 0.0
    """Weight of the state loss: a head reads the task object's recorded state (``SourceWorld.object_state``, e.g.
    PushT's block pose) off every frame at its noise level, so the network must carry where the object went
    (``training.state``); 0: no state head is trained."""
    moving_share: float = 0.0
    """Share of the batches drawn from the clips in which the task object moves (from its recorded state); 0: every
    clip alike."""


@dataclass
class TextToVideoTrainConfig(TrainConfig):
    """Text-to-video pretraining of the world model's DiT on captioned clips with no actions."""

    data: str = ""
    """Captioned trajectory files (``worldsim record --captions``), comma-separated; each is trained at its own
    frame size (its native aspect ratio), a batch holding clips of one file."""
    autoencoder: str = ""
    """Trained autoencoder (a run directory, an autoencoder checkpoint or a world); it works at every frame size."""
    model_size: ModelSize = "S"
    """DiT size (worldsim.config.DIT_SIZES): the same registry as the worlds it will start."""
    clip_frames: int = 16
    """Frames per video clip."""
    patch: int = 0
    """Latent patch size; 0: 16 / the autoencoder's factor (as ``train world``)."""
    image_share: float = 0.25
    """Share of the steps that train on single frames (images) instead of clips."""
    init: str = ""
    """Continue from this text-to-video checkpoint's weights (a new run, e.g. on more data)."""


@dataclass
class BCTrainConfig(TrainConfig):
    """Behaviour cloning: a small CNN policy that maps frames to Box actions (``worldsim.agents.bc``)."""

    frame_size: str = "64x64"
    """Frame size HxW the policy sees (the world's frames, so it can drive a dream)."""
    history: int = 2
    """Frames the policy sees at once (the current one and those before it)."""
    styles: str = ""
    """Clone only episodes whose recorded ``style`` is one of these (comma-separated, e.g. expert,good); empty: all."""
    max_episodes: int = 0
    """Clone at most this many training episodes (the first ones, after --styles): a smaller-data policy; 0: all."""
    successes_only: bool = False
    """Clone only episodes that ended in success (terminated)."""
    bins: int = 32
    """Cells per action dimension of a categorical head (it picks one of several good actions where an MSE head
    averages them); 0: regress the action with an MSE head."""


@dataclass
class DistillTrainConfig(TrainConfig):
    """Distil a world's K-step sampler into fewer steps (``worldsim.training.distill``)."""

    world: str = ""
    """The world to distil (teacher and the student's start): checkpoint dir, run directory or shipped name."""
    student_steps: int = 2
    """Euler steps a frame for the distilled world (must divide the teacher's); stored as its ``sampler.steps``."""
    teacher_steps: int = 0
    """Euler steps a frame the teacher takes; 0: the world's own ``sampler.steps`` (a world shipped at 3 steps can
    still teach a 2-step student from its 4-step sampling)."""
    clip_frames: int = 0
    """Frames per training clip; 0: the world's training clip length."""
    rollout_from: int = 0
    """Self-forcing-style: each clip keeps its first N real frames and the student makes the rest of its context
    itself (its own sampler, the clip's actions, no gradient), so it learns the teacher's steps on its own rollouts;
    0: every context frame real (teacher-forced)."""
    data_weight: float = 0.0
    """Weight of a second target beside the teacher's: the velocity that lands the student's step on the recorded
    frame (noised to the step's end level). On its own rollouts it pulls a drifting context back toward the data;
    0: the teacher's steps only."""
    text_cfg: float = 0.0
    """Text-to-video worlds: the teacher's classifier-free guidance scale on the prompt. The student learns the guided
    steps and samples unguided, one pass a step instead of two (its ``sampler.text_cfg`` is 1). Zero takes the
    world's own ``sampler.text_cfg``."""
    latent_cache: bool = True
    """Encode the dataset once into <out>/latents.h5 instead of every step."""


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "autoencoder": {
        "tiny": dict(steps=30, batch_size=8, warmup_steps=5, widths="8,16", latent_channels=4, log_every=5),
        "default": dict(steps=6000, batch_size=64, lr=1e-3, warmup_steps=200),
        "gpu": dict(steps=20000, batch_size=256, lr=1e-3, warmup_steps=500, workers=8),
    },
    "world": {
        "tiny": dict(steps=30, batch_size=4, warmup_steps=5, model_size="XS", clip_frames=4, patch=2, log_every=5),
        "default": dict(steps=20000, batch_size=16, lr=3e-4, warmup_steps=500),
        "gpu": dict(steps=60000, batch_size=128, lr=3e-4, warmup_steps=1000, workers=8),
    },
    "distill": {
        "tiny": dict(steps=10, batch_size=2, warmup_steps=2, clip_frames=3, log_every=5),
        "default": dict(steps=3000, batch_size=16, lr=1e-4, warmup_steps=100),
        "gpu": dict(steps=10000, batch_size=128, lr=1e-4, warmup_steps=300, workers=8),
    },
    "bc": {
        "tiny": dict(steps=20, batch_size=8, warmup_steps=5, log_every=5),
        "default": dict(steps=4000, batch_size=64, lr=1e-3, warmup_steps=200, ema_decay=0.995),
        "gpu": dict(steps=10000, batch_size=256, lr=1e-3, warmup_steps=500, ema_decay=0.995, workers=8),
    },
    "t2v": {
        "tiny": dict(steps=20, batch_size=4, warmup_steps=5, model_size="XS", clip_frames=4, patch=2, log_every=5),
        "default": dict(steps=20000, batch_size=16, lr=3e-4, warmup_steps=500),
        "gpu": dict(steps=60000, batch_size=128, lr=3e-4, warmup_steps=1000, workers=8),
    },
}


def with_preset(cls: type, stage: str, preset: str, overrides: dict[str, Any]) -> Any:
    """Build ``cls`` from the stage's named preset, then the explicitly set ``overrides``."""
    presets = PRESETS[stage]
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r} for {stage} (choose from {', '.join(presets)})")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {**presets[preset], **{k: v for k, v in overrides.items() if v is not None and k in names}}
    return cls(**{**values, "preset": preset})


@dataclass
class RLTrainConfig:
    """``worldsim rl train``: PPO on a world's dreams."""

    world: str = "carracing"
    """The world to dream in: a shipped world's name, a checkpoint or run directory, or a Hub repo id."""
    out: str = "runs/agent"
    """Run directory: resumable state, TensorBoard logs (tb/), the exported agent (agent/)."""
    algo: str = "ppo"
    """The RL algorithm (ppo)."""
    steps: int = 1_000_000
    """Dream env steps in total (a resumed run continues up to this)."""
    num_envs: int = 32
    """Dreams stepped together (one engine call per step for all)."""
    rollout: int = 64
    """Steps per dream between updates (a batch is num_envs * rollout transitions)."""
    epochs: int = 4
    """Passes over each batch."""
    minibatch: int = 512
    """Transitions per gradient step."""
    lr: float = 2.5e-4
    """Adam learning rate, annealed linearly to 0 over --steps."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.1
    """PPO's ratio clip."""
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    history: int = 3
    """Frames the policy sees at once (stacked)."""
    episode_steps: int = 0
    """Steps of a dream episode; 0: what a real episode has left after the world's start context (CarRacing: 497)."""
    sampler_steps: int | None = None
    """Euler steps per dreamed frame (default: the world's)."""
    noise_levels: tuple[float, float] | None = None
    """Gap tool: draw each update's context noise uniformly in [LOW, HIGH] instead of the world's fixed one."""
    dream_dropout: float = 0.0
    """Gap tool (Dropout's Dream Land): each dream drops this share of the world's MLP units, its own mask per dream,
    redrawn every update, so the agent trains in a family of slightly different worlds; 0: off."""
    precision: str = "auto"
    """The world's precision: fp32, bf16, or auto (bf16 where the CPU has it natively)."""
    compile: bool = False
    """Step the world with its passes compiled (torch.compile; not under a prompt): faster dreams after ~25 s of
    compiling in the first episode (a few more at the first autoreset)."""
    device: str = "cpu"
    """cpu or cuda: where the world dreams."""
    seed: int = 0
    real: bool = False
    """Baseline: train in the world's source env instead of its dreams (every step is a real step; CarRacing runs
    one env per core-second at ~80 world steps/s here, so use fewer --num-envs)."""
    eval_real_every: int = 0
    """Score on real tracks every this many updates (counted as real steps) and keep the best-scoring agent in
    RUN/agent_best_real; 0: never, 0 real steps."""
    eval_real_episodes: int = 4
    save_minutes: float = 5.0
    """Write a resumable checkpoint at least this often (and on Ctrl-C, at --max-minutes and at the end)."""
    max_minutes: float = 0.0
    """Stop (with a checkpoint) after this much wall time; 0 = run to --steps."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint."""
    init: str | None = None
    """Start the policy from this agent (a run or agent directory) instead of from scratch: e.g. a dream-trained
    agent fine-tuned with --real. Its card's dream and real steps are added to this run's, so the count stays
    honest."""

    def check(self) -> None:
        resolve_device(self.device)
        if self.algo != "ppo":
            raise InputError(f"--algo {self.algo}: worldsim rl trains with ppo")
        for name in ("steps", "num_envs", "rollout", "epochs", "minibatch", "history"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.num_envs * self.rollout < self.minibatch:
            raise InputError(f"--minibatch {self.minibatch} is more than a batch ({self.num_envs} x {self.rollout})")
        if self.real and (self.noise_levels is not None or self.dream_dropout):
            raise InputError("--noise-levels and --dream-dropout change the dream; the real env (--real) has none")
        if self.compile and (self.real or self.dream_dropout):
            raise InputError("--compile compiles the dream's passes: not with --real, nor --dream-dropout (its hooks)")
        if not 0 <= self.dream_dropout < 1:
            raise InputError(f"--dream-dropout must be in [0, 1), got {self.dream_dropout}")
        if self.noise_levels is not None and not 0 <= self.noise_levels[0] <= self.noise_levels[1] < 1:
            raise InputError(f"--noise-levels needs 0 <= LOW <= HIGH < 1, got {self.noise_levels}")
