"""The backends, by name: one line each. A backend's options are its constructor's keyword parameters,
declared (with their defaults and documentation) in that one place and validated from there by every
entry point: CLI flags, lm-eval ``model_args``, LiteLLM handler keywords and bench settings."""

from __future__ import annotations

import importlib
import inspect

from ..errors import ConfigError

BACKENDS = {
    "llamacpp": "relaygen_integrations.backends.llamacpp:LlamaCppBackend",
    "hf": "relaygen_integrations.backends.transformers:TransformersBackend",
    "openai": "relaygen_integrations.backends.openai:OpenAIBackend",
}


def check_backend_name(name: object) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    return name


def backend_class(name: str) -> type:
    """The backend's class (importing its library: an ImportError names the extra to install)."""
    module, _, cls = BACKENDS[check_backend_name(name)].partition(":")
    return getattr(importlib.import_module(module), cls)


def backend_options(name: str) -> dict[str, inspect.Parameter]:
    """The options a backend takes: its constructor's parameters after the model (path or URL)."""
    params = list(inspect.signature(backend_class(name).__init__).parameters.values())[2:]
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

