"""From names to a ready engine: a RelaySpec -> registry entries -> fetched files -> backends -> RelayEngine."""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .backends import backend_class, check_backend_name
from .core.engine import RelayEngine
from .errors import ConfigError, ModelFileError, ModelNotFoundError
from .options import RelaySpec
from .fetcher import fetch
from .registry import Registry, is_fetched, model_path


def _model_file(model: str | Path, registry: Registry | None, progress: bool) -> Path:
    """A local file or directory as given, else the registry model's file (fetched if missing)."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    registry = registry or Registry.load()
    if str(model) not in registry.models and (path.suffix == ".gguf" or len(path.parts) > 1):
        raise ModelNotFoundError(f"model file not found: {path} (and it is not a registry model name either: "
                                 "`relaygen models list` shows those)")
    return fetch(registry.model(str(model)), progress=progress)


def _template_source(model: str, registry: Registry | None) -> Path:
    """For a server model named after a registry entry: its chat template from the local GGUF."""
    if Path(model).expanduser().exists():
        return Path(model).expanduser()
    registry = registry or Registry.load()
    if model in registry.models and is_fetched(registry.model(model)):
        return model_path(registry.model(model))
    raise ConfigError(f"the chat template of {model!r} is needed to render prompts for a server: pass "
                      f"chat_template= (--chat-template: a GGUF file, tokenizer_config.json or Jinja text)"
                      + (f", or run `relaygen models fetch {model}`" if model in registry.models else ""))


def load_backend(model: str | Path, backend: str = "llamacpp", registry: Registry | None = None,
                 progress: bool = False, **options: Any):
    """A backend for a registry model name or a local model file (llamacpp, hf), or a server URL
    (openai: then ``template_from`` names the registry model whose chat template to use)."""
    cls = backend_class(check_backend_name(backend))
    if backend == "openai":
        template_from = options.pop("template_from", None)
        if options.get("chat_template") is None and options.get("chat_format") != "raw":
            if template_from is None:
                raise ConfigError(f"no chat template for the server at {model}: pass chat_template=")
            options["chat_template"] = _template_source(str(template_from), registry)
        return cls(str(model), **options)
    from .backends.local import check_local_options

    check_local_options(options.get("n_ctx"), options.get("n_threads"))  # before any file is fetched
    path = _model_file(model, registry, progress)
    if "progress" in inspect.signature(cls.__init__).parameters:
        options.setdefault("progress", progress)
    try:
        return cls(path, **options)
    except ModelFileError as exc:
        if Path(model).expanduser().exists():  # the user's own file: the message says what to do
            raise
        raise ModelFileError(f"the cached file of registry model {model!r} does not load: {path} is truncated or "
                             f"corrupt; run `relaygen models fetch {model}` to verify it and fetch it anew") from exc


@dataclass(frozen=True)
class ResolvedPair:
    """What a spec names, once the registry has been read: the models, their marker and cue profile."""

    registry: Registry
    large: Any
    small: Any
    reasoning_end: str | None
    profile: Any  # what load_profile takes


def resolve_pair(spec: RelaySpec) -> ResolvedPair:
    """The spec's pair through the registry (nothing loaded): models, reasoning-end marker and profile.
    Shared by ``build``, calibration and the bench, so they agree on what a pair means."""
    registry = Registry.load(spec.registry_path)
    entry = registry.pair(spec.pair)
    large_name, small_name = spec.large or entry.large, spec.small or entry.small
    marker = entry.reasoning_end
    if marker is None and str(large_name) in registry.models:
        marker = registry.model(str(large_name)).reasoning_end
    formats = {registry.model(str(n)).chat_format for n in (large_name, small_name) if str(n) in registry.models}
    if len(formats) > 1:
        raise ConfigError(f"{large_name} and {small_name} use different chat formats ({' vs '.join(sorted(formats))}), "
                          "so one cannot continue the other's text")
    profile = spec.profile if spec.profile is not None else registry.pair_profile(entry)
    return ResolvedPair(registry, large_name, small_name, marker, profile)


def load_pair(pair: str | None = None, **options: Any) -> RelayEngine:
    """Build a RelayEngine for a registry pair (default: the registry's default pair). ``options``: the
    fields of ``RelaySpec`` (large, small, backend, large_url, small_url, profile, cue_matching,
    speculative, draft_max, draft_model, registry_path, progress), of ``RelayConfig`` (or ``config=``),
    and the chosen backend's own options (``n_ctx``, ``n_threads``, ...); anything else is an error.

    ``large``/``small`` override either model with a registry name or a model path (a GGUF file; for
    ``backend="hf"`` also a transformers model directory). With ``backend="openai"`` the models run on
    servers at ``large_url``/``small_url`` and ``large``/``small`` name the registry models whose chat
    templates render the prompts (or pass ``chat_template=``). The pair's reasoning-end marker is used
    unless the relay settings name one.

    ``speculative``: ``draft`` decodes the large model's tokens speculatively with ``draft_model``
    (default: the pair's small model, in a context of its own), ``lookup`` drafts by prompt lookup,
    ``off`` does neither, ``auto`` (default) picks ``draft`` when the large model runs on a GPU and
    ``off`` on a CPU, where verifying a batch costs nearly as much as decoding it token by token (see
    docs/speculative.md). ``draft_max`` caps the tokens per draft.
    """
    return build(RelaySpec.from_mapping({"pair": pair, **options}))


def relay_settings(spec: RelaySpec, resolved: ResolvedPair):
    """The relay settings and cue profile a spec runs with: the pair's reasoning-end marker unless the
    settings name one."""
    from .core.profile import load_profile

    config = spec.relay
    if config.reasoning_end is None and resolved.reasoning_end:
        config = replace(config, reasoning_end=resolved.reasoning_end)
    return config, load_profile(resolved.profile, mode=spec.cue_matching)


def build(spec: RelaySpec) -> RelayEngine:
    """Resolve, load, wire; a failure part-way closes what was already loaded (up to three models)."""
    if spec.max_batch != 1:
        raise ConfigError(f"max_batch={spec.max_batch} asks for a concurrent engine: load_concurrent()")
    resolved = resolve_pair(spec)
    config, cue_profile = relay_settings(spec, resolved)
    registry, options = resolved.registry, dict(spec.backend_options)
    with ExitStack() as loaded:
        if spec.backend == "openai":
            large = load_backend(spec.large_url, "openai", registry, template_from=resolved.large, **options)
            loaded.callback(large.close)
            small = load_backend(spec.small_url, "openai", registry, template_from=resolved.small, **options)
        else:
            large = load_backend(resolved.large, spec.backend, registry, spec.progress, **options)
            loaded.callback(large.close)
            if spec.backend == "hf" and _model_file(resolved.small, registry, spec.progress) == large.path:
                small = type(large).sharing_weights(large)  # one copy of the weights
            else:
                small = load_backend(resolved.small, spec.backend, registry, spec.progress, **options)
        loaded.callback(small.close)
        drafter = make_drafter(spec, large, resolved)
        if drafter is not None:
            from .speculative import SpeculativeBackend
            from .speculative.draft import ModelDrafter

            if isinstance(drafter, ModelDrafter):
                loaded.callback(drafter.close)
            large = SpeculativeBackend(large, drafter)  # closes the drafter and the large model together
        engine = RelayEngine(large, small, cue_profile, config)
        loaded.pop_all()  # the engine's backends own them now
    return engine


def make_drafter(spec: RelaySpec, large_backend, resolved: ResolvedPair, mode: str | None = None):
    """The drafter ``mode`` (default: the spec's) asks for over ``large_backend``, or None: a draft model
    loaded in a context of its own (the spec's draft_model, else the pair's small model) or prompt lookup."""
    mode = resolve_speculative(mode or spec.speculative, large_backend)
    if mode == "draft":
        from .speculative import DraftModel

        draft = load_backend(spec.draft_model or resolved.small, spec.backend, resolved.registry, spec.progress,
                             **spec.backend_options)
        return DraftModel(draft, max_tokens=spec.draft_max)
    if mode == "lookup":
        from .speculative import prompt_lookup

        return prompt_lookup(spec.draft_max)
    return None


def resolve_speculative(mode: str, large_backend) -> str:
    """``auto``: draft-model speculation when the large model runs on a GPU, else off."""
    if mode != "auto":
        return mode
    return "draft" if large_backend.on_gpu() else "off"
