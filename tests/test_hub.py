"""Worlds on the Hugging Face Hub, offline: a hand-built huggingface_hub cache, and uploads recorded instead of sent."""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, RepoUrl, constants, scan_cache_dir
from huggingface_hub.utils import filter_repo_objects
from test_engine import tiny_world

import worldsim  # noqa: F401  (registers worldsim/WorldModel-v0)
from worldsim.checkpoint import CARD_FILE, CONFIG_FILE, STARTS_FILE, WEIGHTS_FILE
from worldsim.engine import WorldModel
from worldsim.errors import CheckpointError
from worldsim.hub import HubRef, parse_hub_ref, push_world
from worldsim.worlds import resolve_world

REPO = "owner/world"
MAIN = "a1" * 20
"""Commit hashes: 40 hex digits, as huggingface_hub expects in ``refs/`` and ``snapshots/``."""
V2 = "b2" * 20


def world(seed: int) -> WorldModel:
    """A tiny world with weights and start contexts of its own, so every checkpoint file says which world it is."""
    wm = tiny_world(seed)
    g = torch.Generator().manual_seed(seed)
    wm.starts = {"frames": torch.randint(0, 256, (2, 2, 32, 32, 3), generator=g, dtype=torch.uint8)}
    return wm


def cache_world(cache, repo_id: str, wm: WorldModel, commit: str, refs: tuple[str, ...] = ("main",)):
    """Lay a saved world out as huggingface_hub's cache does: content-named blobs, a snapshot of links, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    saved = cache.parent / f"saved-{commit}"
    wm.save_pretrained(saved, card="# a tiny world\n")
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for file in sorted(saved.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        file.replace(blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no newline: huggingface_hub reads the file as the hash
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty huggingface_hub cache, offline. The constants are read at import, so they are patched, not env vars."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def hub_env(cache) -> dict[str, str]:
    """Environment for a subprocess that must find worlds in ``cache`` and never reach the network."""
    return dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_HOME=str(cache.parent / "hf_home"))


def first_frames(wm: WorldModel) -> np.ndarray:
    wm.reset(seed=0)
    return np.concatenate([wm.step([1]).frames, wm.step([2]).frames])


def assert_same_world(loaded: WorldModel, saved: WorldModel) -> None:
    assert loaded.config == saved.config
    want = saved.state_dict()
    got = loaded.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert torch.equal(loaded.starts["frames"], saved.starts["frames"])


# ----------------------------------------------------------------- loading


def test_the_hand_built_cache_is_one_huggingface_hub_recognises(hub_cache):
    cache_world(hub_cache, REPO, world(0), MAIN)
    cache_world(hub_cache, REPO, world(1), V2, refs=("v2",))
    info = scan_cache_dir(hub_cache)
    assert not info.warnings
    [repo] = info.repos
    assert repo.repo_id == REPO and repo.repo_type == "model"
    assert {r.commit_hash: set(r.refs) for r in repo.revisions} == {MAIN: {"main"}, V2: {"v2"}}


def test_a_cached_world_loads_by_repo_id_without_a_network_call(hub_cache, monkeypatch, one_torch_thread):
    saved = world(0)
    snapshot = cache_world(hub_cache, REPO, saved, MAIN)

    def no_network(*args, **kwargs):
        raise AssertionError("a cached world must load without asking the Hub")

    # Online, so only the cache-first lookup keeps the Hub out of it.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "repo_info", no_network)
    monkeypatch.setattr(HfApi, "list_repo_tree", no_network)
    assert resolve_world(REPO) == snapshot
    loaded = WorldModel.from_pretrained(REPO)
    assert_same_world(loaded, saved)
    np.testing.assert_array_equal(first_frames(loaded), first_frames(saved))


def test_a_cached_world_plays_in_a_fresh_process_offline(hub_cache, tmp_path, one_torch_thread):
    """The honest test: huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE from the environment at import."""
    saved = world(0)
    cache_world(hub_cache, REPO, saved, MAIN)
    out = tmp_path / "frames.npy"
    script = (
        "import sys, numpy as np, torch; torch.set_num_threads(1); from worldsim import WorldModel; "
        "wm = WorldModel.from_pretrained(sys.argv[1]); wm.reset(seed=0); "
        "np.save(sys.argv[2], np.concatenate([wm.step([1]).frames, wm.step([2]).frames]))"
    )
    p = subprocess.run(
        [sys.executable, "-c", script, REPO, str(out)], env=hub_env(hub_cache), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(np.load(out), first_frames(saved))


def test_a_revision_after_the_at_sign_picks_that_snapshot(hub_cache):
    main, v2 = world(0), world(1)
    cache_world(hub_cache, REPO, main, MAIN)
    cache_world(hub_cache, REPO, v2, V2, refs=("v2",))
    assert resolve_world(REPO).name == MAIN
    assert resolve_world(f"{REPO}@v2").name == V2
    assert resolve_world(f"{REPO}@{V2}").name == V2  # a commit hash needs no ref
    assert_same_world(WorldModel.from_pretrained(f"{REPO}@v2"), v2)
    assert_same_world(WorldModel.from_pretrained(REPO), main)


def test_the_gymnasium_env_takes_a_repo_id(hub_cache):
    cache_world(hub_cache, REPO, world(0), MAIN)
    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint=REPO)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and env.step(1)[0].shape == (32, 32, 3)
    env.close()


@pytest.mark.parametrize("name", ["owner/missing", f"{REPO}@no-such-tag"])
def test_a_repo_not_in_the_cache_offline_is_a_one_line_error_naming_it(hub_cache, name):
    cache_world(hub_cache, REPO, world(0), MAIN)
    with pytest.raises(CheckpointError) as info:
        WorldModel.from_pretrained(name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"no checkpoint at {name}, no shipped world of that name (shipped: ")
    assert f"no Hub repo '{name}' in the local cache {hub_cache} (HF_HUB_OFFLINE is set)" in message


def test_the_cli_reports_an_uncached_repo_in_one_line_with_exit_2(hub_cache):
    p = subprocess.run(
        [sys.executable, "-m", "worldsim.cli", "bench", "--checkpoint", "owner/missing", "--json"],
        env=hub_env(hub_cache),
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("worldsim bench: error: no checkpoint at owner/missing")
    assert "no Hub repo 'owner/missing' in the local cache" in p.stderr


def test_an_invalid_repo_id_says_so(hub_cache):
    with pytest.raises(CheckpointError, match="'a--b/c' is not a valid Hub repo id"):
        resolve_world("a--b/c")


@pytest.mark.parametrize(
    "name,ref",
    [
        ("owner/name", HubRef("owner/name")),
        ("owner/name@v2", HubRef("owner/name", "v2")),
        ("owner/name@refs/pr/1", HubRef("owner/name", "refs/pr/1")),
        ("Org-1/my.world_2", HubRef("Org-1/my.world_2")),
        ("carracing", None),
        ("runs/carracing/world", None),
        ("./runs/world", None),
        ("/abs/world", None),
        ("owner/name@", None),
        ("owner/na me", None),
    ],
)
def test_only_owner_slash_name_is_taken_for_a_repo_id(name, ref):
    assert parse_hub_ref(name) == ref


def test_a_missing_path_that_is_no_repo_id_keeps_the_short_error(hub_cache):
    with pytest.raises(CheckpointError) as info:
        resolve_world("no/such/dir")
    message = str(info.value)
    assert message.startswith("no checkpoint at no/such/dir and no shipped world") and "Hub" not in message


# ----------------------------------------------------------------- uploading


@pytest.fixture
def recorded_hub(tmp_path, monkeypatch):
    """HfApi.create_repo / upload_folder replaced by recorders; what would be uploaded is copied to ``uploaded/``."""
    calls: dict[str, dict] = {}
    uploaded = tmp_path / "uploaded"

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return RepoUrl(f"{constants.ENDPOINT}/{repo_id if '/' in repo_id else 'me/' + repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload_folder"] = {"repo_id": repo_id, "folder_path": folder_path, **kwargs}
        files = [p.name for p in sorted(os.scandir(folder_path), key=lambda p: p.name) if p.is_file()]
        uploaded.mkdir()
        for name in filter_repo_objects(files, allow_patterns=kwargs.get("allow_patterns")):
            shutil.copy(os.path.join(folder_path, name), uploaded / name)
        oid = "c3" * 20
        url = f"{constants.ENDPOINT}/{repo_id}/commit/{oid}"
        return CommitInfo(url, commit_message=kwargs["commit_message"], commit_description="", oid=oid)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_never_sent")
    return calls, uploaded


def test_push_world_uploads_a_complete_checkpoint_to_the_repo(tmp_path, recorded_hub):
    calls, uploaded = recorded_hub
    saved = world(0)
    saved.save_pretrained(tmp_path / "w", card="# a tiny world\n")
    (tmp_path / "w" / "optimizer.pt").write_bytes(b"training state stays home")
    url = push_world(tmp_path / "w", REPO, private=True)
    assert url == f"{constants.ENDPOINT}/{REPO}/commit/{'c3' * 20}"
    assert calls["create_repo"] == {"repo_id": REPO, "private": True, "repo_type": "model", "exist_ok": True}
    assert calls["upload_folder"]["repo_id"] == REPO and calls["upload_folder"]["repo_type"] == "model"
    assert sorted(p.name for p in uploaded.iterdir()) == sorted([CARD_FILE, CONFIG_FILE, STARTS_FILE, WEIGHTS_FILE])
    assert_same_world(WorldModel.from_pretrained(uploaded), saved)


def test_push_world_without_an_owner_uploads_to_the_tokens_account(tmp_path, recorded_hub):
    calls, _ = recorded_hub
    world(0).save_pretrained(tmp_path / "w")
    push_world(tmp_path / "w", "w")
    assert calls["create_repo"]["repo_id"] == "w" and calls["upload_folder"]["repo_id"] == "me/w"


def test_push_world_checks_the_checkpoint_before_the_hub(tmp_path, recorded_hub):
    calls, _ = recorded_hub
    world(0).save_pretrained(tmp_path / "w")
    (tmp_path / "w" / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        push_world(tmp_path / "w", REPO)
    assert calls == {}


def test_push_world_without_a_token_is_a_one_line_error(tmp_path, monkeypatch, recorded_hub):
    calls, _ = recorded_hub
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    world(0).save_pretrained(tmp_path / "w")
    with pytest.raises(CheckpointError, match="needs a Hugging Face token: run `hf auth login` or set HF_TOKEN"):
        push_world(tmp_path / "w", REPO)
    assert calls == {}


def test_push_world_when_the_hub_cannot_be_reached_is_a_one_line_error(tmp_path, monkeypatch):
    """The real HfApi, in offline mode: its request hook refuses before any connection is opened."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_never_sent")
    world(0).save_pretrained(tmp_path / "w")
    with pytest.raises(CheckpointError) as info:
        push_world(tmp_path / "w", REPO)
    message = str(info.value)
    assert message.startswith(f"could not push {tmp_path / 'w'} to Hub repo '{REPO}' (") and "\n" not in message


@pytest.mark.skipif(
    "push_to_hub" not in inspect.signature(WorldModel.save_pretrained).parameters,
    reason="WorldModel.save_pretrained has no push_to_hub yet",
)
def test_save_pretrained_can_push_to_the_hub(tmp_path, recorded_hub):
    calls, uploaded = recorded_hub
    saved = world(0)
    url = saved.save_pretrained(tmp_path / "w", push_to_hub=True, repo_id=REPO)
    assert url.startswith(f"{constants.ENDPOINT}/{REPO}/commit/")
    assert calls["upload_folder"]["folder_path"] == tmp_path / "w"
    assert_same_world(WorldModel.from_pretrained(uploaded), saved)
