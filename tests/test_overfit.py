"""A tiny model learns a tiny world: the loss falls >= 10x and the sampler then predicts next frames."""

from __future__ import annotations

import torch
from conftest import tiny_config

from worldsim.config import SamplerConfig
from worldsim.diffusion.sampler import Rollout
from worldsim.models.conditioning import FrameConditioning
from worldsim.models.dit import DiT
from worldsim.training.objectives import ClipBatch, LossConfig, diffusion_forcing_loss


def pattern_clips(n: int, T: int, size: int = 8, C: int = 4, seed: int = 0):
    """Latent clips of a per-clip random pattern whose offset goes up (action 1) or down (action 0).

    Predicting frame t needs both the context (the pattern, the current brightness) and the action.
    """
    g = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, 2, (n, T), generator=g)
    pattern = torch.randn(n, 1, C, size, size, generator=g).sign()
    step = torch.where(actions == 1, 0.4, -0.4)
    step[:, 0] = 0.0
    offset = torch.rand(n, 1, generator=g) - 0.5 + step.cumsum(1)
    latents = pattern + offset[:, :, None, None, None]
    null = torch.zeros(n, T, dtype=torch.bool)
    null[:, 0] = True
    return latents, actions, null


def held_out_loss(dit: DiT, batch: ClipBatch, cfg: LossConfig) -> float:
    """Loss averaged over 8 fixed draws of levels and noise, so before/after compare like with like."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return sum(diffusion_forcing_loss(dit, batch, cfg, g)[0].item() for _ in range(8)) / 8


def test_tiny_model_overfits_then_predicts_next_frames():
    torch.manual_seed(0)
    n, T, steps = 8, 4, 500
    cfg = tiny_config(frame_size=(32, 32), window=4, sinks=0, max_frames=6)
    cfg.dit.width, cfg.dit.depth, cfg.dit.heads = 64, 2, 2
    dit = DiT(cfg.dit, cfg.action, latent_channels=4)
    latents, actions, null = pattern_clips(n, T)
    batch = ClipBatch(latents=latents, actions=actions, action_null=null)
    loss_cfg = LossConfig(action_dropout=0.0, context_noise_max=0.0, teacher_forcing_prob=1.0)
    opt = torch.optim.AdamW(dit.parameters(), lr=4e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    before = held_out_loss(dit, batch, loss_cfg)
    for _ in range(steps):
        loss, _ = diffusion_forcing_loss(dit, batch, loss_cfg, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    after = held_out_loss(dit, batch, loss_cfg)
    assert after < before / 10, f"loss fell only from {before:.3f} to {after:.3f}"

    # Predict frames 2..3 of every clip from its first 2 frames and the true actions, with the cache.
    dit.eval()
    sampler = SamplerConfig(steps=8, window=4, sinks=0, context_noise=0.0)
    rollout = Rollout(dit, sampler, n, (4, 8, 8), torch.Generator().manual_seed(1))
    with torch.no_grad():
        rollout.write(latents[:, :2], FrameConditioning(actions[:, :2], null[:, :2]))
        preds = [
            rollout.generate(FrameConditioning(actions[:, t : t + 1], null[:, t : t + 1]), 1)[0] for t in range(2, T)
        ]
    model_err = (torch.cat(preds, 1) - latents[:, 2:]).pow(2).mean()
    copy_last_err = (latents[:, 1:2] - latents[:, 2:]).pow(2).mean()
    assert model_err < copy_last_err / 5, f"prediction error {model_err:.4f} vs copy-last {copy_last_err:.4f}"
