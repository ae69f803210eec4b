"""Text-to-video pretraining of the world's DiT: buckets of one frame size, images beside clips, and worlds started
from the backbone."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import labelled_episode

from worldsim.checkpoint import save_autoencoder
from worldsim.cli import main
from worldsim.config import AutoencoderConfig
from worldsim.data import TrajectoryWriter
from worldsim.diffusion.schedule import sample_training_levels
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.training.config import TextToVideoTrainConfig, WorldTrainConfig, with_preset
from worldsim.training.loop import Distributed, StepBatchSampler, train
from worldsim.training.t2v import TextToVideoStage
from worldsim.training.world import WorldStage

TINY_AE = AutoencoderConfig(widths=[8, 16], latent_channels=4)


def captioned(path, size: tuple[int, int], words: str, captions: bool = True) -> None:
    with TrajectoryWriter(
        path, env_id="T-v0", frame_size=size, action_space=gym.spaces.Discrete(3), frame_rate=10
    ) as w:
        for i, n in enumerate((9, 11)):
            ep = labelled_episode(i, n, size=size[1], n_actions=3)
            ep["observations"] = np.ascontiguousarray(np.resize(ep["observations"], (n + 1, *size, 3)).astype(np.uint8))
            w.add_episode(**ep, caption=[(0, 5, f"{words} start"), (5, n + 1, f"{words} end")] if captions else None)


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    save_autoencoder(tmp_path / "ae", [16, 16], dataclasses.asdict(TINY_AE), FrameAutoencoder(TINY_AE).state_dict())
    captioned(tmp_path / "square.h5", (16, 16), "a square")
    captioned(tmp_path / "tall.h5", (24, 16), "a tall one")
    return tmp_path


def t2v_cfg(root, **changes) -> TextToVideoTrainConfig:
    base = dict(
        data=f"{root / 'square.h5'},{root / 'tall.h5'}",
        autoencoder=str(root / "ae"),
        out=str(root / "t2v"),
        steps=8,
        workers=0,
        precision="fp32",
        save_minutes=1e6,
    )
    return with_preset(TextToVideoTrainConfig, "t2v", "tiny", {**base, **changes})


def test_single_frames_are_never_context():
    levels, context = sample_training_levels(64, 1, torch.Generator().manual_seed(0), 0.1, teacher_forcing_prob=1.0)
    assert not context.any() and levels.shape == (64, 1)


def test_bucketed_batches_hold_one_bucket_and_are_addressed_by_step():
    buckets = [np.arange(0, 10), np.arange(10, 13), np.arange(13, 40)]
    sampler = StepBatchSampler(40, 4, Distributed(), seed=3, first_step=0, last_step=200, buckets=buckets)
    batches = [sampler.global_indices(s) for s in range(200)]
    for b in batches:
        assert any(set(b) <= set(bucket) for bucket in buckets), b
    assert {int(np.searchsorted([10, 13], b[0], side="right")) for b in batches} == {0, 1, 2}  # every bucket is used
    again = StepBatchSampler(40, 4, Distributed(), seed=3, first_step=150, last_step=200, buckets=buckets)
    assert all((again.global_indices(s) == batches[s]).all() for s in range(150, 200))  # resumable
    weighted = StepBatchSampler(40, 4, Distributed(), 3, 0, 400, buckets=buckets, bucket_weights=[0, 1, 0])
    assert all(set(weighted.global_indices(s)) <= set(buckets[1]) for s in range(50))


def test_t2v_trains_on_two_sizes_with_images_and_exports_a_backbone(setup):
    cfg = t2v_cfg(setup)
    stage = TextToVideoStage(cfg)
    seen = set()
    for s in range(40):  # the batches the run will see: clips and single frames, of both sizes
        batch = [
            stage.dataset[int(i)]
            for i in StepBatchSampler(
                len(stage.dataset), 4, Distributed(), 0, 0, 40, stage.dataset.buckets, stage.dataset.bucket_weights
            ).global_indices(s)
        ]
        shapes = {tuple(item["latents"].shape) for item in batch}
        assert len(shapes) == 1  # one bucket: one size and length
        seen |= shapes
        assert all(item["caption"].startswith(("a square", "a tall one")) for item in batch)
    assert {(s[0], s[2]) for s in seen} == {(4, 8), (4, 12), (1, 8), (1, 12)}  # clips and images, 16 and 24 rows
    result = train(stage, cfg, progress=False)
    assert result["step"] == 8 and np.isfinite(result["final_metrics"]["loss"])
    wm = WorldModel.from_pretrained(setup / "t2v")  # the run directory stands for its export
    assert wm.config.text_to_video and wm.config.dit.text_dim == 384
    assert wm.config.sampler.text_cfg == 3.0  # a backbone is sampled guided unless told otherwise
    wm.set_frame_size((24, 16))
    first = np.full((1, 24, 16, 3), 100, dtype=np.uint8)
    wm.reset(frames=first, seed=0, text="a tall one end")
    assert wm.step([0]).frames.shape == (1, 24, 16, 3)


def test_world_from_the_backbone_gets_new_actions_and_keeps_the_rest(setup):
    train(TextToVideoStage(t2v_cfg(setup, steps=2)), t2v_cfg(setup, steps=2), progress=False)
    backbone = WorldModel.from_pretrained(setup / "t2v").dit.state_dict()
    base = dict(data=str(setup / "square.h5"), autoencoder=str(setup / "ae"), init=str(setup / "t2v"), workers=0)
    cfg = with_preset(WorldTrainConfig, "world", "tiny", {**base, "out": str(setup / "w"), "precision": "fp32"})
    world = WorldStage(cfg)
    state = world.model.state_dict()
    assert world.config.dit.text_dim == 384 and not world.config.text_to_video
    assert state["action_embed.tables.0.weight"].shape[0] == 4  # 3 actions + null: new, not the backbone's 2 rows
    assert all(torch.equal(state[k], v) for k, v in backbone.items() if not k.startswith("action_embed."))


def test_t2v_bad_input_is_one_line(setup, capsys):
    captioned(setup / "plain.h5", (16, 16), "x", captions=False)
    captioned(setup / "odd.h5", (18, 16), "x")
    argv = ["train", "t2v", "--preset", "tiny", "--autoencoder", str(setup / "ae"), "--out", str(setup / "o")]
    for data, message in ((setup / "plain.h5", "has no captions"), (setup / "odd.h5", "not divisible by")):
        assert main([*argv, "--data", str(data)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (setup / "o" / "state").exists()


def test_world_mixes_text_only_clips_of_other_sources(setup):
    """--text-data: a share of the steps trains on captioned clips of other files (their own frame size and action
    space), with no actions and no reward targets; the world's own batches are unchanged."""
    base = dict(data=str(setup / "square.h5"), autoencoder=str(setup / "ae"), workers=0, precision="fp32")
    cfg = with_preset(
        WorldTrainConfig,
        "world",
        "tiny",
        {
            **base,
            "out": str(setup / "w"),
            "text_data": str(setup / "tall.h5"),
            "text_share": 0.5,
            "steps": 6,
            "text_holdout": 0,
        },
    )
    with pytest.raises(InputError, match="--text-holdout 2 leaves no training episodes"):
        WorldStage(dataclasses.replace(cfg, text_holdout=2))  # tall.h5 has 2 episodes
    stage = WorldStage(cfg)
    assert stage.config.dit.text_dim == 384
    sampler = StepBatchSampler(len(stage.dataset), 4, Distributed(), 0, 0, 30, stage.dataset.buckets,
                               stage.dataset.bucket_weights)  # fmt: skip
    kinds = set()
    for s in range(30):
        items = [stage.dataset[int(i)] for i in sampler.global_indices(s)]
        kinds.add(("text_only" in items[0], tuple(items[0]["latents"].shape)))
        assert len({"text_only" in item for item in items}) == 1
    assert kinds == {(False, (4, 4, 8, 8)), (True, (4, 4, 12, 8))}
    text_batch = {"latents": torch.randn(2, 4, 4, 12, 8), "caption": ["a tall one start"] * 2, "text_only": [True] * 2}
    clip = stage.clip_batch(stage.model, text_batch)
    assert clip.actions is None and clip.action_null.all() and clip.rewards is None
    result = train(stage, cfg, progress=False)
    assert result["step"] == 6 and np.isfinite(result["final_metrics"]["loss"])
