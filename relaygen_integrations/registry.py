"""The model registry: which models and pairs relaygen knows, where their files and cue profiles are.

Read from the shipped ``models/registry.toml`` with the user's own ``$RELAYGEN_HOME/registry.toml`` merged
over it (a model of the same name is replaced; a pair's keys override the shipped pair's, so a user file may
give a shipped pair only a ``profile``), and the profiles ``relaygen calibrate --pair NAME`` wrote to
``$RELAYGEN_HOME/profiles/NAME.json``. ``$RELAYGEN_REGISTRY`` names a complete registry instead, read
alone. Profile paths resolve beside the file that names them. Files are cached under
``$RELAYGEN_HOME/models`` (default ``~/.cache/relaygen/models``); ``fetcher.py`` puts them there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FetchError, ModelNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelEntry:
    name: str
    file: str
    description: str = ""
    role: str = "any"
    chat_format: str = ""
    reasoning_end: str | None = None
    sources: tuple[dict, ...] = ()
    path: str | None = None  # a file on this machine, used where it is: no copy into the cache, no checksum


@dataclass(frozen=True)
class PairEntry:
    name: str
    large: str
    small: str
    description: str = ""
    profile: str | None = None
    reasoning_end: str | None = None
    default: bool = False
    profile_base: Path | None = None  # the folder of the registry file that named ``profile``


@dataclass
class Registry:
    path: Path  # the shipped registry, or $RELAYGEN_REGISTRY
    models: dict[str, ModelEntry] = field(default_factory=dict)
    pairs: dict[str, PairEntry] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # every file read, in order (the user's last)
    user_profiles: bool = False  # whether $RELAYGEN_HOME/profiles counts (not with $RELAYGEN_REGISTRY)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Registry":
        given = path or os.environ.get("RELAYGEN_REGISTRY")
        files = [Path(given)] if given else [default_registry_path()]
        if not given and user_registry_path().is_file():
            files.append(user_registry_path())
        reg = cls(files[0], files=tuple(files), user_profiles=not given)
        pairs: dict[str, dict] = {}
        for file in files:
            data = _read(file, required=file == files[0])
            for name, m in data.get("models", {}).items():
                _need(isinstance(m, dict) and ("file" in m or "path" in m), file,
                      f"model {name!r} needs a file = \"NAME.gguf\" (with sources) or a path = \"/its/file.gguf\"")
                local = str(Path(os.path.expandvars(m["path"])).expanduser()) if "path" in m else None
                reg.models[name] = ModelEntry(
                    name=name, file=m.get("file") or Path(local).name, description=m.get("description", ""),
                    role=m.get("role", "any"), chat_format=m.get("chat_format", ""),
                    reasoning_end=m.get("reasoning_end"), sources=tuple(m.get("sources", ())), path=local)
            for name, p in data.get("pairs", {}).items():
                _need(isinstance(p, dict), file, f"pair {name!r} must be a table")
                merged = {**pairs.get(name, {}), **p}
                if "profile" in p:
                    merged["profile_base"] = file.parent
                pairs[name] = merged
            if any(p.get("default") for p in data.get("pairs", {}).values()):  # a later file's default wins
                for name in set(pairs) - {n for n, p in data["pairs"].items() if p.get("default")}:
                    pairs[name]["default"] = False
        for name, p in pairs.items():
            for role in ("large", "small"):
                _need(role in p, reg.files[-1], f"pair {name!r} names no {role} model")
                if p[role] not in reg.models:
                    raise ModelNotFoundError(f"pair {name} names unknown model {p[role]}")
            reg.pairs[name] = PairEntry(
                name=name, large=p["large"], small=p["small"], description=p.get("description", ""),
                profile=p.get("profile"), reasoning_end=p.get("reasoning_end"), default=p.get("default", False),
                profile_base=p.get("profile_base"))
        return reg

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise ModelNotFoundError(f"unknown model {name!r}; known models: {', '.join(self.models)}")
        return self.models[name]

    def pair(self, name: str | None = None) -> PairEntry:
        if name is None:
            defaults = [p for p in self.pairs.values() if p.default] or list(self.pairs.values())
            if not defaults:
                raise ModelNotFoundError(f"the registry {self.path} defines no pair")
            return defaults[0]
        if name not in self.pairs:
            raise ModelNotFoundError(f"unknown pair {name!r}; known pairs: {', '.join(self.pairs)}")
        return self.pairs[name]

    def user_names_profile(self, pair: PairEntry) -> bool:
        """Whether the user's registry file names the pair's profile (then it wins over a calibrated one)."""
        return bool(pair.profile) and self.user_profiles and len(self.files) > 1 \
            and pair.profile_base == self.files[-1].parent

    def pair_profile(self, pair: PairEntry) -> "str | Path | None":
        """The cue profile the pair runs with: one the user's registry names, else one ``relaygen calibrate
        --pair`` wrote for it, else the shipped registry's (a built-in name, or a file beside the registry)."""
        from .core.profile import BUILTIN_PROFILES

        calibrated = user_profile_path(pair.name)
        if not self.user_names_profile(pair) and self.user_profiles and calibrated.is_file():
            return calibrated
        if not pair.profile or pair.profile in BUILTIN_PROFILES:
            return pair.profile
        return Path(pair.profile_base or self.path.parent) / pair.profile


def _read(path: Path, required: bool) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ModelNotFoundError(f"model registry not found: {path}") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise FetchError(f"model registry {path} is not valid TOML: {exc}") from None


def _need(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise FetchError(f"model registry {path}: {what}")


def default_registry_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "models" / "registry.toml", here / "_models" / "registry.toml"):
        if candidate.exists():
            return candidate
    return here.parent / "models" / "registry.toml"


def relaygen_home() -> Path:
    return Path(os.environ.get("RELAYGEN_HOME") or Path.home() / ".cache" / "relaygen").expanduser()


def user_registry_path() -> Path:
    """The user's registry, merged over the shipped one: pairs of your own without editing the package."""
    return relaygen_home() / "registry.toml"


def user_profile_path(pair: str) -> Path:
    """Where ``relaygen calibrate --pair NAME`` writes the pair's profile, and where the registry finds it."""
    return relaygen_home() / "profiles" / f"{pair}.json"


def model_path(entry: ModelEntry) -> Path:
    """Where the model's file lives once fetched (it may not exist yet); a ``path`` model's own file."""
    return Path(entry.path) if entry.path else relaygen_home() / "models" / entry.file


def is_fetched(entry: ModelEntry) -> bool:
    return model_path(entry).is_file()
