"""Model files from the Hugging Face hub, online or, with ``HF_HUB_OFFLINE=1``, from the hub's local cache.

Offline, nothing is asked of the hub: the file is taken from the cache (``$HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``) and checked against the registry's sha256 or, where the registry gives none,
against the name of the cached blob, which for a file stored with Git LFS is its sha256 (the hub's own hash).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .errors import FetchError

SHA256 = re.compile(r"[0-9a-f]{64}")


def hub_offline() -> bool:
    """What huggingface_hub itself decided from ``HF_HUB_OFFLINE`` when it was imported."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_from_hub(source: dict, copy: Callable[[Path], None], say: Callable[..., None]) -> str:
    """Hand the hub file of ``source`` (repo, filename, optional revision and sha256) to ``copy``; return the
    sha256 it must have."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise FetchError("huggingface_hub is not installed (pip install huggingface_hub)") from None
    repo, filename, revision = source["repo"], source["filename"], source.get("revision")
    if hub_offline():
        return _from_cache(repo, filename, revision, source.get("sha256"), copy)
    from huggingface_hub import HfApi, hf_hub_download

    try:
        info = HfApi().get_paths_info(repo, [filename], revision=revision)
        expected = source.get("sha256") or (info[0].lfs.sha256 if info and info[0].lfs else None)
        with tempfile.TemporaryDirectory(prefix="relaygen-hub-") as tmp:
            say(description=f"downloading {repo}")
            copy(Path(hf_hub_download(repo, filename, revision=revision, local_dir=tmp)))
    except Exception as exc:  # network and hub errors come in many classes
        raise FetchError(f"model hub download of {repo}/{filename} failed: {exc}") from None
    if not expected:
        raise FetchError(f"the hub gives no sha256 for {repo}/{filename}")
    return expected


def _from_cache(repo: str, filename: str, revision: str | None, sha256: str | None,
                copy: Callable[[Path], None]) -> str:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        local = Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        raise FetchError(f"HF_HUB_OFFLINE is set and {repo}/{filename} is not in the hub cache "
                         f"({constants.HF_HUB_CACHE}): download it there first, or unset HF_HUB_OFFLINE") from None
    blob = local.resolve()
    expected = sha256 or (blob.name if SHA256.fullmatch(blob.name) else None)
    if expected is None:
        raise FetchError(f"{repo}/{filename} in the hub cache ({local}) has no sha256 to check it against: its blob is "
                         "not named by one (a file stored without Git LFS); give the registry source a sha256")
    print(f"relaygen: HF_HUB_OFFLINE is set: {repo}/{filename} from the hub cache ({local})", file=sys.stderr)
    copy(local)
    return expected
