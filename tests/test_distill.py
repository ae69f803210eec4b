"""Sampler distillation: the teacher-forced layout is what a rollout sees, the student learns, the export is faster."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize, tiny_config
from test_t2v import setup, t2v_cfg  # noqa: F401  (fixtures)
from test_training import autoencoder_dir, data, world_cfg  # noqa: F401  (fixtures)

from worldsim.cli import main
from worldsim.config import ActionSpec
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.models.dit import DiT
from worldsim.training.config import DistillTrainConfig, with_preset
from worldsim.training.distill import DistillStage, TeacherForced
from worldsim.training.loop import train
from worldsim.training.objectives import own_rollout
from worldsim.training.t2v import TextToVideoStage
from worldsim.training.world import WorldStage


def test_teacher_forced_layout_gives_each_noisy_frame_what_a_rollout_would():
    """In one pass over [context frames 0..T-1, noisy frames 1..T-1], noisy frame t gets exactly the output of a
    plain causal pass over context frames 0..t-1 followed by it: the next frame of a rollout."""
    cfg = tiny_config()
    spec = ActionSpec(kind="discrete", n=3)
    dit = randomize(DiT(cfg.dit, spec, cfg.autoencoder.latent_channels).eval(), seed=3)
    B, T, shape = 2, 4, (cfg.autoencoder.latent_channels, *cfg.latent_size)
    g = torch.Generator().manual_seed(0)
    context, noisy = torch.randn(B, T, *shape, generator=g), torch.randn(B, T - 1, *shape, generator=g)
    context_levels, noisy_levels = torch.full((B, T), 0.05), torch.rand(B, T - 1, generator=g)
    actions = torch.randint(3, (B, T), generator=g)
    null = torch.zeros(B, T, dtype=torch.bool)
    null[:, 0] = True
    h, w = cfg.latent_size
    layout = TeacherForced(T, (h // cfg.dit.patch) * (w // cfg.dit.patch), torch.device("cpu"))
    with torch.no_grad():
        both = dit(
            torch.cat([context, noisy], 1), torch.cat([context_levels, noisy_levels], 1),
            torch.cat([actions, actions[:, 1:]], 1), torch.cat([null, null[:, 1:]], 1), layout.positions,
            memory=layout,
        )  # fmt: skip
        for t in range(1, T):
            alone = dit(
                torch.cat([context[:, :t], noisy[:, t - 1 : t]], 1),
                torch.cat([context_levels[:, :t], noisy_levels[:, t - 1 : t]], 1),
                actions[:, : t + 1], null[:, : t + 1], torch.arange(t + 1),
            )  # fmt: skip
            torch.testing.assert_close(both.velocity[:, T + t - 1], alone.velocity[:, t], atol=1e-5, rtol=0)
            torch.testing.assert_close(both.reward[:, T + t - 1], alone.reward[:, t], atol=1e-5, rtol=0)


@pytest.fixture
def teacher(tmp_path, data, autoencoder_dir):  # noqa: F811
    cfg = world_cfg(data, autoencoder_dir, tmp_path / "teacher", steps=2)
    train(WorldStage(cfg), cfg, progress=False)
    world = WorldModel.from_pretrained(tmp_path / "teacher" / "world")
    randomize(world.dit, seed=1)  # a teacher whose steps differ from one another
    world.save_pretrained(tmp_path / "teacher" / "world")
    return tmp_path / "teacher" / "world"


def distill_cfg(data_file, world, out, **changes) -> DistillTrainConfig:
    base = dict(data=str(data_file), world=str(world), out=str(out), workers=0, precision="fp32", save_minutes=1e6)
    return with_preset(DistillTrainConfig, "distill", "tiny", {**base, **changes})


@pytest.mark.parametrize(("rollout_from", "data_weight"), [(0, 0.0), (1, 0.0), (1, 1.0)])
def test_the_student_learns_the_teachers_steps_and_exports_a_faster_world(
    tmp_path,
    data,  # noqa: F811
    teacher,
    rollout_from,
    data_weight,
):
    cfg = distill_cfg(data, teacher, tmp_path / "student", steps=40, batch_size=4, lr=1e-3, warmup_steps=5,
                      rollout_from=rollout_from, data_weight=data_weight)  # fmt: skip
    stage = DistillStage(cfg)
    stage.head_weight = 0.0  # the test data's rewards (up to 200) would swamp the flow in 40 steps of a tiny model
    gen = torch.Generator().manual_seed(0)
    batch = torch.utils.data.default_collate([stage.dataset[i] for i in range(4)])
    _, before = stage.loss(stage.model, batch, gen, slice(None), 4)
    train(stage, cfg, progress=False)
    _, after = stage.loss(stage.model, batch, torch.Generator().manual_seed(0), slice(None), 4)
    assert before["flow"] > 0  # one step of the teacher is not two
    assert after["flow"] < 0.5 * before["flow"], (before, after)
    for m in (before, after):  # the flow loss is the teacher's term plus the weighted recorded-frame term
        assert m["flow"] == pytest.approx(m["teacher_flow"] + data_weight * m["data_flow"], rel=1e-5)
    if data_weight:
        assert after["data_flow"] < before["data_flow"], (before, after)
    student = WorldModel.from_pretrained(tmp_path / "student" / "world")
    assert student.config.sampler.steps == 2 and WorldModel.from_pretrained(teacher).config.sampler.steps == 4
    student.reset(seed=0)
    assert student.step([1]).frames.shape == (1, 16, 16, 3)


@pytest.mark.parametrize("rollout_from", [0, 1])
def test_data_target_lands_a_one_step_student_on_the_recorded_frame(tmp_path, data, teacher, rollout_from):  # noqa: F811
    """--data-weight's term: for a 1-step student (noise at level 1 -> level 0) it is the squared error between the
    student's velocity and the one that lands its step on the recorded frame (noise - frame), also when the context
    is the student's own rollout."""
    cfg = distill_cfg(data, teacher, tmp_path / "student", student_steps=1, rollout_from=rollout_from, data_weight=0.5)
    stage = DistillStage(cfg)
    batch = torch.utils.data.default_collate([stage.dataset[i] for i in range(2)])
    recorded = batch["latents"] if "latents" in batch else stage.autoencoder.encode(batch["frames"]).float()
    seen = {}  # the student's last pass: the training pass over [context, noisy frames]
    stage.model.register_forward_hook(lambda module, args, out: seen.update(x=args[0], velocity=out.velocity))
    _, metrics = stage.loss(stage.model, batch, torch.Generator().manual_seed(0), slice(None), 2)
    T = recorded.shape[1]
    start, velocity = seen["x"][:, T:], seen["velocity"][:, T:].float()
    expected = (velocity - (start - recorded[:, 1:])).pow(2).mean()
    assert metrics["data_flow"] == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["data_flow"] != pytest.approx(metrics["teacher_flow"], rel=1e-3)  # not the teacher's target


def test_own_rollout_keeps_the_real_start_and_makes_the_rest_from_the_students_past(tmp_path, data, teacher):  # noqa: F811
    """Self-forcing-style context: the first ``rollout_from`` frames stay real; each later frame is the student's own,
    made from the frames before it (so the real frames it replaces change nothing) and from its noise."""
    stage = DistillStage(distill_cfg(data, teacher, tmp_path / "student", rollout_from=1, clip_frames=3))
    batch = torch.utils.data.default_collate([stage.dataset[i] for i in range(2)])
    x = batch["latents"] if "latents" in batch else stage.autoencoder.encode(batch["frames"]).float()
    g = torch.Generator().manual_seed(0)
    context_noise, noise = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    args = (stage.config.sampler, context_noise, noise, batch["actions"], batch["action_null"])
    T = x.shape[1]
    made = own_rollout(stage.model, x, 1, T, *args)
    assert torch.equal(made[:, :1], x[:, :1])
    assert (made[:, 1:] - x[:, 1:]).abs().mean() > 1e-3  # the student's frames, not the data's
    scrambled = x.clone()
    scrambled[:, 1:] = torch.randn(scrambled[:, 1:].shape, generator=g)
    torch.testing.assert_close(own_rollout(stage.model, scrambled, 1, T, *args), made)
    args = (stage.config.sampler, context_noise, noise.flip(0), batch["actions"], batch["action_null"])
    other = own_rollout(stage.model, x, 1, T, *args)
    assert not torch.allclose(other[:, 1:], made[:, 1:])


@pytest.fixture
def backbone(setup):  # noqa: F811
    """A tiny text-to-video backbone (two files, two frame sizes) whose every layer, cross-attention included, reads
    its input: random weights, so its steps differ and the prompt changes them."""
    cfg = t2v_cfg(setup, steps=2)
    train(TextToVideoStage(cfg), cfg, progress=False)
    wm = WorldModel.from_pretrained(setup / "t2v")
    randomize(wm.dit, seed=1)
    wm.save_pretrained(setup / "t2v_world")
    return setup / "t2v_world"


def t2v_distill_cfg(root, world, **changes) -> DistillTrainConfig:
    return distill_cfg(f"{root / 'square.h5'},{root / 'tall.h5'}", world, root / "student", **changes)


@pytest.mark.parametrize("rollout_from", [0, 1])
def test_a_text_to_video_student_learns_the_guided_teacher_and_samples_unguided(setup, backbone, rollout_from):  # noqa: F811
    cfg = t2v_distill_cfg(setup, backbone, steps=40, batch_size=4, lr=1e-3, warmup_steps=5, text_cfg=3.0,
                          rollout_from=rollout_from)  # fmt: skip
    stage = DistillStage(cfg)
    assert stage.guidance == 3.0
    sizes = {tuple(stage.dataset[int(b[0])]["latents"].shape[2:]) for b in stage.dataset.buckets}
    assert sizes == {(8, 8), (12, 8)}  # both files, each at its own frame size
    batch = torch.utils.data.default_collate([stage.dataset[int(i)] for i in stage.dataset.buckets[0][:4]])
    _, before = stage.loss(stage.model, batch, torch.Generator().manual_seed(0), slice(None), 4)
    train(stage, cfg, progress=False)
    _, after = stage.loss(stage.model, batch, torch.Generator().manual_seed(0), slice(None), 4)
    assert after["flow"] < 0.5 * before["flow"], (before, after)
    assert "reward" not in after  # a backbone has no rewards to learn
    student = WorldModel.from_pretrained(setup / "student" / "world")
    assert student.config.text_to_video and student.config.sampler.steps == 2
    assert student.config.sampler.text_cfg == 1.0  # guidance is built in: one pass a step
    student.set_frame_size((24, 16))
    student.reset(frames=np.full((1, 24, 16, 3), 100, dtype=np.uint8), seed=0, text="a tall one end")
    assert student.step([0]).frames.shape == (1, 24, 16, 3)


def test_the_student_keeps_the_worlds_guidance_unless_it_learnt_it(setup, backbone):  # noqa: F811
    """A backbone stores text_cfg 3: by default its teacher guides at 3 and the student, which learnt that, samples
    at 1; with an unguided teacher (--text-cfg 1) the student keeps the world's 3."""
    guided = DistillStage(t2v_distill_cfg(setup, backbone))
    assert (guided.guidance, guided.config.sampler.text_cfg) == (3.0, 1.0)
    plain = DistillStage(t2v_distill_cfg(setup, backbone, text_cfg=1.0))
    assert (plain.guidance, plain.config.sampler.text_cfg) == (1.0, 3.0)


def test_guidance_moves_the_target_by_what_the_prompt_changes(setup, backbone):  # noqa: F811
    """The guided teacher's step is v(prompt) + (w - 1) (v(prompt) - v(no prompt)): for a teacher blind to the
    prompt (cross-attention outputs zeroed) any w gives the unguided target; for one that reads it, w moves it."""
    stage = DistillStage(t2v_distill_cfg(setup, backbone, text_cfg=3.0))
    batch = torch.utils.data.default_collate([stage.dataset[int(i)] for i in stage.dataset.buckets[0][:2]])

    def teacher_flow(guidance: float) -> float:
        stage.guidance = guidance
        return stage.loss(stage.model, batch, torch.Generator().manual_seed(0), slice(None), 2)[1]["teacher_flow"]

    reading = teacher_flow(1.0), teacher_flow(3.0)
    assert reading[0] != pytest.approx(reading[1], rel=1e-3)
    for block in stage.teacher.blocks:
        block.cross.proj.weight.data.zero_()
        block.cross.proj.bias.data.zero_()
    assert teacher_flow(3.0) == pytest.approx(teacher_flow(1.0), rel=1e-6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--student-steps", "3"], "must be below and divide"),
        (["--teacher-steps", "3"], "divide the teacher's sampler steps (3)"),  # the flag, not the world's 4
        (["--clip-frames", "99"], "--clip-frames 99"),
        (["--rollout-from", "3"], "--rollout-from 3 must be in 0..2"),
        (["--data-weight", "-1"], "--data-weight -1.0 must be >= 0"),
        (["--text-cfg", "3"], "is not a text-to-video world"),
    ],
)
def test_bad_distill_flags_are_one_line_errors(tmp_path, capsys, data, teacher, flags, message):  # noqa: F811
    out = tmp_path / "student"
    args = ["train", "distill", "--preset", "tiny", "--data", str(data), "--world", str(teacher), "--out", str(out)]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (out / "world").exists()
    with pytest.raises(InputError, match="--world is required"):
        DistillStage(distill_cfg(data, "", out))
