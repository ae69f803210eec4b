"""Worlds on the Hugging Face Hub: a model repo holding a checkpoint directory, shared like any model.

A repo id (``owner/name``, or ``owner/name@revision`` for a branch, tag or commit) works wherever a checkpoint
directory does: ``WorldModel.from_pretrained``, the Gymnasium env's ``checkpoint=``, every ``--world/--checkpoint``.
Files come through huggingface_hub's cache, so its settings apply (HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN)::

    worldsim bench --checkpoint owner/name          # downloaded on first use, then read from the cache
    HF_HUB_OFFLINE=1 worldsim play --world owner/name@v2

    from worldsim.hub import push_world
    push_world("runs/carracing/world", "owner/name")  # or WorldModel.save_pretrained(..., push_to_hub=True)

huggingface_hub is imported inside the functions, so ``import worldsim`` does not pay for it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from worldsim.checkpoint import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from worldsim.errors import CheckpointError
from worldsim.version import __version__

WORLD_FILES = [CONFIG_FILE, "*.safetensors", CARD_FILE]
"""What a world repo is made of: downloads and uploads take only these (not training state or stray files)."""

_HUB_REF = re.compile(r"(?P<repo_id>\w[\w.-]*/\w[\w.-]*)(?:@(?P<revision>[^\s@]+))?")


class HubRef(NamedTuple):
    """A world on the Hub: a model repo and, optionally, a branch, tag or commit of it."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


def parse_hub_ref(name: str) -> HubRef | None:
    """``owner/name`` or ``owner/name@revision`` -> HubRef; anything else (a deeper path, ``./x/y``, a name) -> None.

    Only the shape is checked here; huggingface_hub's own validation (no ``--``, length ...) runs on download.
    """
    match = _HUB_REF.fullmatch(name)
    return HubRef(match["repo_id"], match["revision"]) if match else None


def hub_snapshot(ref: HubRef) -> Path:
    """The world's directory in huggingface_hub's cache, downloaded there first if it is not cached.

    The cache is read first (``local_files_only``), so a cached world costs no network call, online or not: a
    branch such as ``main`` stays at the commit that was cached (``hf download owner/name`` moves it on; a commit
    hash after the ``@`` pins one). Raises a one-line CheckpointError that says what was looked for and why it
    failed.
    """
    from huggingface_hub import constants  # huggingface_hub: only when the Hub is used
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        HTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return _cached_or_downloaded(ref)
    except HFValidationError as e:
        raise CheckpointError(f"'{ref}' is not a valid Hub repo id ({_first_line(e)})") from None
    except GatedRepoError:
        raise CheckpointError(f"Hub repo '{ref.repo_id}' is gated: accept its terms on the Hub, set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"no Hub repo '{ref.repo_id}' on {constants.ENDPOINT} (it does not exist, or it is private and no "
            "HF_TOKEN was given)"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"Hub repo '{ref.repo_id}' has no revision '{ref.revision}'") from None
    except LocalEntryNotFoundError as e:  # not cached, and the download was not allowed or the Hub not reachable
        reached = _first_line(e.__cause__ or e)  # the cause is the network error behind huggingface_hub's own message
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub could not be reached: {reached}"
        raise CheckpointError(f"no Hub repo '{ref}' in the local cache {constants.HF_HUB_CACHE} ({why})") from None
    except (OSError, HTTPError) as e:  # HTTPError: the base error of huggingface_hub's HTTP client (server, network)
        raise CheckpointError(f"could not download Hub repo '{ref}' ({_first_line(e)})") from None


def _cached_or_downloaded(ref: HubRef) -> Path:
    from huggingface_hub import snapshot_download  # huggingface_hub: only when the Hub is used
    from huggingface_hub.errors import LocalEntryNotFoundError


    def download(local_files_only: bool) -> Path:
        return Path(
            snapshot_download(
                ref.repo_id,
                revision=ref.revision,
                repo_type="model",
                allow_patterns=WORLD_FILES,
                local_files_only=local_files_only,
                library_name="worldsim",
                library_version=__version__,
            )
        )

    try:
        cached = download(local_files_only=True)
        # A snapshot folder can hold only some files (an interrupted download, a single hf_hub_download).
        if (cached / CONFIG_FILE).is_file() and (cached / WEIGHTS_FILE).is_file():
            return cached
    except LocalEntryNotFoundError:
        pass
    return download(local_files_only=False)  # under HF_HUB_OFFLINE this makes no request and raises


def push_world(
    path: str | Path,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload world with worldsim",
    token: str | None = None,
) -> str:
    """Upload a checkpoint directory to the Hub model repo ``repo_id`` (created if needed); returns the commit URL.

    ``repo_id`` without an owner (``"name"``) goes to the token's account, as in transformers' ``push_to_hub``.
    The checkpoint is loaded first, so a broken one fails here rather than on the Hub; only WORLD_FILES go up.
    """
    from huggingface_hub import HfApi, get_token  # huggingface_hub: only when the Hub is used
    from huggingface_hub.errors import HFValidationError, HTTPError


    path = Path(path)
    load_checkpoint(path)
    if token is None and get_token() is None:
        raise CheckpointError(
            f"pushing to Hub repo '{repo_id}' needs a Hugging Face token: run `hf auth login` or set HF_TOKEN"
        )
    api = HfApi(token=token, library_name="worldsim", library_version=__version__)
    try:
        repo = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=path,
            repo_type="model",
            allow_patterns=WORLD_FILES,
            commit_message=commit_message,
        )
    except HFValidationError as e:
        raise CheckpointError(f"'{repo_id}' is not a valid Hub repo id ({_first_line(e)})") from None
    except (OSError, HTTPError) as e:  # no network, offline mode, bad token, no write access ...
        raise CheckpointError(f"could not push {path} to Hub repo '{repo_id}' ({_first_line(e)})") from None
    return commit.commit_url


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
