"""From names to a ready engine: registry entries -> fetched files -> backends -> RelayEngine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .core.engine import RelayConfig, RelayEngine
from .errors import ConfigError
from .registry import Registry, fetch

BACKENDS = ("llamacpp",)


def load_backend(model: str | Path, backend: str = "llamacpp", registry: Registry | None = None,
                 progress: bool = False, **options: Any):
    """A backend for a registry model name or a local model file."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    path = Path(model).expanduser()
    if not path.is_file():
        registry = registry or Registry.load()
        path = fetch(registry.model(str(model)), progress=progress)
    from .backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(path, **options)


def load_pair(pair: str | None = None, *, large: str | Path | None = None, small: str | Path | None = None,
              backend: str = "llamacpp", profile: Any = None, cue_matching: str | None = None,
              config: RelayConfig | None = None,
              progress: bool = False, registry_path: str | Path | None = None, **backend_options: Any) -> RelayEngine:
    """Build a RelayEngine for a registry pair (default: the registry's default pair).

    ``large``/``small`` override either model with a registry name or a GGUF path. ``profile`` is a
    built-in profile name, a profile JSON path or a cue list; default: the pair's profile. The
    pair's reasoning-end marker is used unless ``config`` sets one.
    """
    registry = Registry.load(registry_path)
    entry = registry.pair(pair)
    large_name, small_name = large or entry.large, small or entry.small
    marker = entry.reasoning_end
    if marker is None and str(large_name) in registry.models:
        marker = registry.model(str(large_name)).reasoning_end
    formats = {registry.model(str(n)).chat_format for n in (large_name, small_name) if str(n) in registry.models}
    if len(formats) > 1:
        raise ConfigError(f"{large_name} and {small_name} use different chat formats ({' vs '.join(sorted(formats))}), "
                          "so one cannot continue the other's text")
    config = config or RelayConfig()
    if config.reasoning_end is None and marker:
        config = replace(config, reasoning_end=marker)
    config.validated()
    from .core.profile import BUILTIN_PROFILES, load_profile

    if profile is None:
        profile = entry.profile
        if profile and profile not in BUILTIN_PROFILES:
            profile = registry.path.parent / profile  # profile files live beside the registry
    cue_profile = load_profile(profile, mode=cue_matching)
    large_backend = load_backend(large_name, backend, registry, progress, **backend_options)
    small_backend = load_backend(small_name, backend, registry, progress, **backend_options)
    return RelayEngine(large_backend, small_backend, cue_profile, config)
