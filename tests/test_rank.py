"""``worldsim.rank`` / ``worldsim rank``: several policies dreamed in one batch and ranked, on tiny random worlds.

Maths: MMRV, Spearman and the bootstrap interval on hand-computed examples. Contracts: a policy's episodes inside
the batch equal ``predict`` of it alone (same seeds, same dreams), the ranking order, the real PushT env beside the
dreams (correlations, times), one-line errors before any work (nothing written), the CLI's table, JSON and videos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_vector_env import close

import worldsim
from worldsim import RankResult, WorldModel
from worldsim.cli import main
from worldsim.errors import ConfigError, InputError
from worldsim.evaluation.metrics import bootstrap_ci, mmrv, spearman
from worldsim.evaluation.rank import format_rank_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _target(x: float, y: float):
    """A factory of a policy that always aims the pusher at (x, y)."""

    def factory(action_space, seed):
        return lambda frame: np.array([x, y], np.float32)

    factory.__qualname__ = f"target_{int(x)}_{int(y)}"
    return factory


# ---------------------------------------------------------------------------------------------- maths
def test_mmrv_on_hand_computed_examples():
    assert mmrv([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]) == 0.0  # the right order, whatever the values
    assert mmrv([0.9, 0.5, 0.1], [0.2, 0.4, 0.8]) == pytest.approx((0.6 + 0.4 + 0.6) / 3)  # reversed
    # one swapped pair (policies 1 and 2, real gap 0.3): both charged 0.3, policy 0 nothing
    assert mmrv([0.1, 0.3, 0.2], [0.1, 0.2, 0.5]) == pytest.approx(0.6 / 3)
    # a predicted tie of policies that really differ is one violation, charged to the better one (SIMPLER's code)
    assert mmrv([0.5, 0.5], [0.2, 0.6]) == pytest.approx(0.4 / 2)
    assert mmrv([0.3, 0.3], [0.7, 0.7]) == 0.0
    with pytest.raises(InputError, match="same length"):
        mmrv([0.1, 0.2], [0.1])


def test_spearman_uses_average_ranks_for_ties():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson of the ranks
    assert spearman([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(np.sqrt(0.9))


def test_bootstrap_ci():
    assert bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3) and bootstrap_ci([2.0]) == (2.0, 2.0)
    successes = np.array([1] * 50 + [0] * 50)
    low, high = bootstrap_ci(successes)
    assert 0.38 < low < 0.42 and 0.58 < high < 0.62  # about 0.5 +- 1.96 * sqrt(0.25 / 100)
    x = np.random.default_rng(3).normal(size=30)
    assert bootstrap_ci(x) == bootstrap_ci(x) and bootstrap_ci(x, seed=1) != bootstrap_ci(x)  # a function of the seed
    # The max of a resample of (1, 5, 9) is 1 with probability 1/27 (above 2.5%), 9 with 19/27 (above 2.5%).
    assert bootstrap_ci([1.0, 5.0, 9.0], stat=np.max) == (1.0, 9.0)
    assert bootstrap_ci([1.0, 5.0, 9.0], stat=np.max, level=0.9) == (5.0, 9.0)  # 1/27 is below 5%
    with pytest.raises(InputError, match="at least one value"):
        bootstrap_ci([])


# ---------------------------------------------------------------------------------------------- contracts
def test_a_policy_in_the_batch_dreams_what_it_dreams_alone(ckpt):
    """Episode i of each policy uses seed + i inside rank's one batch as in predict alone: the same dreams."""
    policies = ["random", "idle", "road"]
    r = worldsim.rank(ckpt, policies, episodes=3, horizon=4, seed=5, keep_frames=3)
    assert isinstance(r, RankResult) and [x.policy for x in r.results] == policies
    for name, inside in zip(policies, r.results):
        alone = worldsim.predict(ckpt, name, episodes=3, horizon=4, seed=5, keep_frames=True)
        assert inside.seeds == alone.seeds == [5, 6, 7]
        assert inside.dream_return == pytest.approx(alone.dream_return, abs=1e-4)
        assert np.array_equal(inside.dream_terminated, alone.dream_terminated)
        assert close(inside.dream_frames, alone.dream_frames)
    s = r.summary()
    assert s["dream_worlds"] == 9 and s["dream_seconds"] > 0 and "real_seconds" not in s  # no real env, no pairs
    assert r.ranked()[0].policy in policies and "predicted return" in format_rank_table(r)


def test_ranked_by_predicted_success_then_max_reward(pusht_world):
    """Heads replaced: a dream terminates (succeeds) when the target's x is past 400; its reward is x / 512."""
    wm = WorldModel.from_pretrained(pusht_world)
    step = wm.step

    def heads(actions):
        out = step(actions)
        x = np.asarray(actions)[:, 0]
        out.reward[:] = x / 512
        out.terminated[:] = x > 400
        return out

    wm.step = heads
    policies = [_target(100, 50), _target(450, 50), _target(300, 50), _target(500, 50)]
    r = worldsim.rank(wm, policies, episodes=2, horizon=3, judge=False)  # the patched heads score
    ranked = [x.policy for x in r.ranked()]
    # 500 and 450 succeed every time (tied: the higher max reward first), then 300, 100 by max reward
    assert ranked == [f"test_rank:target_{x}_50" for x in (500, 450, 300, 100)]
    d = r.to_dict()
    assert d["ranking"] == ranked and [p["rank"] for p in d["per_policy"]] == [1, 2, 3, 4]
    assert d["ranked_by"] == ["dream_success_rate", "dream_max_reward_mean", "dream_return_mean"]
    assert d["per_policy"][0]["dream_success_rate"] == 1.0 and d["per_policy"][3]["dream_success_rate"] == 0.0


def test_real_pusht_beside_the_dreams(pusht_world):
    r = worldsim.rank(pusht_world, ["random", "idle", _target(600, -5)], episodes=2, horizon=3, real=True,
                      judge=False)  # fmt: skip  (the untrained world's heads give every policy its own return)
    for x in r.results:
        assert x.real_success.shape == (2,) and x.real_max_reward.shape == (2,)
    s = r.summary()
    assert s["real_seconds"] > 0 and s["dream_seconds"] > 0
    for key in ("return_pearson", "return_spearman", "return_mmrv", "max_reward_pearson", "success_mmrv"):
        assert np.isfinite(s[key])
    # Nobody succeeds in 3 steps, dreamt or real: the success correlations are undefined (not 0), null in the JSON.
    assert np.isnan(s["success_pearson"]) and np.isnan(s["success_spearman"])
    assert r.to_dict()["success_pearson"] is None
    predicted = np.array([x.dream_return.mean() for x in r.results])
    real = np.array([x.real_return.mean() for x in r.results])
    assert s["return_mmrv"] == pytest.approx(mmrv(predicted, real))
    table = format_rank_table(r)
    assert "| # | policy | predicted success | real success | success abs. error |" in table
    assert "MMRV" in table and "real env" in table and "success rate across policies: Pearson undefined" in table


def test_bad_input_fails_before_the_world_is_loaded(ckpt, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("loaded the world before checking the input")

    monkeypatch.setattr(WorldModel, "from_pretrained", boom)
    for policies, kwargs, error, message in [
        (["random"], {}, ConfigError, "two or more policies, got 1"),
        (["random", "idle", "random"], {}, ConfigError, "more than once: random"),
        (["random", "nope"], {}, InputError, "unknown policy 'nope'"),
        (["random", "idle"], {"real": True}, InputError, "names no real env"),
        (["random", "idle"], {"episodes": 0}, InputError, "must be >= 1"),
    ]:
        with pytest.raises(error, match=message):
            worldsim.rank(ckpt, policies, **kwargs)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_table_json_and_videos(pusht_world, tmp_path, capsys):
    out, videos = tmp_path / "out" / "rank.json", tmp_path / "videos"
    code = main(["rank", "--world", pusht_world, "--policies", "random,idle", "--episodes", "3", "--horizon", "2",
                 "--real", "--precision", "fp32", "--json", str(out), "--video-dir", str(videos),
                 "--video-episodes", "2"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "2 policies in" in printed and "| # | policy | predicted success | real success |" in printed
    assert "Pearson" in printed and "Spearman" in printed and "MMRV" in printed
    result = json.loads(out.read_text())
    for key in ("world", "horizon", "seed", "success_reward", "ranked_by", "ranking", "policies", "episodes",
                "dream_worlds", "dream_seconds", "real_seconds", "success_pearson", "success_spearman",
                "success_mmrv", "return_pearson", "return_spearman", "return_mmrv", "per_policy"):  # fmt: skip
        assert key in result, key
    assert sorted(result["ranking"]) == ["idle", "random"] and result["dream_worlds"] == 6
    entry = result["per_policy"][0]
    for key in ("rank", "policy", "dream_success_rate", "dream_success_ci95", "real_success_rate", "real_success_ci95",
                "dream_max_reward_mean", "real_max_reward_mean", "dream_return_ci95", "success_abs_error",
                "per_episode"):  # fmt: skip
        assert key in entry, key
    assert [row["seed"] for row in entry["per_episode"]] == [0, 1, 2]
    import imageio.v3 as iio

    assert sorted(p.name for p in videos.iterdir()) == ["idle.mp4", "random.mp4"]
    frames = iio.imread(videos / "random.mp4")
    assert frames.shape[0] == 3  # the fork's frame, then 2 steps
    assert not list(tmp_path.rglob(".*"))  # written atomically: no temp files left


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--policies", "random"], "ranking needs two or more policies, got 1"),
        (["--policies", "random,idle,random"], "policies given more than once: random"),
        (["--policies", "random,nope"], "unknown policy 'nope'"),
        (["--policies", "random,idle", "--real"], "names no real env"),
        (["--policies", "random,idle", "--json", "{blocker}/r.json"], "is a file, not a directory"),
        (["--policies", "random,idle", "--video-dir", "{blocker}"], "it is a file, not a directory"),
        (["--policies", "random,idle", "--video-episodes", "0"], "--video-episodes must be >= 1"),
        ([], "--policies"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(ckpt, tmp_path, capsys, monkeypatch, flags, message):
    def boom(*args, **kwargs):
        raise AssertionError("loaded the world before checking the input")

    monkeypatch.setattr(WorldModel, "from_pretrained", boom)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    flags = [f.format(blocker=blocker) for f in flags]
    code = main(["rank", "--world", ckpt, "--horizon", "2", "--json", str(tmp_path / "r.json"),
                 "--video-dir", str(tmp_path / "videos"), *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("worldsim rank: error: ") and message in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]  # nothing written
