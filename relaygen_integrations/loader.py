"""From names to a ready engine: registry entries -> fetched files -> backends -> RelayEngine."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from .core.engine import RelayConfig, RelayEngine
from .errors import ConfigError, ModelFileError, ModelNotFoundError
from .registry import Registry, fetch, is_fetched, model_path

BACKENDS = ("llamacpp", "hf", "openai")


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
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if backend == "openai":
        from .backends.openai import OpenAIBackend

        template_from = options.pop("template_from", None)
        if options.get("chat_template") is None and options.get("chat_format") != "raw":
            if template_from is None:
                raise ConfigError(f"no chat template for the server at {model}: pass chat_template=")
            options["chat_template"] = _template_source(str(template_from), registry)
        return OpenAIBackend(str(model), **options)
    from .backends.base import check_local_options

    check_local_options(options.get("n_ctx"), options.get("n_threads"))  # before any file is fetched
    path = _model_file(model, registry, progress)
    try:
        if backend == "hf":
            from .backends.transformers import TransformersBackend

            return TransformersBackend(path, **options)
        from .backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, **options)
    except ModelFileError as exc:
        if Path(model).expanduser().exists():  # the user's own file: the message says what to do
            raise
        raise ModelFileError(f"the cached file of registry model {model!r} does not load: {path} is truncated or "
                             f"corrupt; run `relaygen models fetch {model}` to verify it and fetch it anew") from exc


def load_pair(pair: str | None = None, *, large: str | Path | None = None, small: str | Path | None = None,
              backend: str = "llamacpp", profile: Any = None, cue_matching: str | None = None,
              config: RelayConfig | None = None, large_url: str | None = None, small_url: str | None = None,
              speculative: str = "auto", draft_max: int = 8, draft_model: str | Path | None = None,
              progress: bool = False, registry_path: str | Path | None = None, **backend_options: Any) -> RelayEngine:
    """Build a RelayEngine for a registry pair (default: the registry's default pair).

    ``large``/``small`` override either model with a registry name or a model path (a GGUF file;
    for ``backend="hf"`` also a transformers model directory). With ``backend="openai"`` the models
    run on servers at ``large_url``/``small_url`` and ``large``/``small`` name the registry models
    whose chat templates render the prompts (or pass ``chat_template=``). ``profile`` is a
    built-in profile name, a profile JSON path or a cue list; default: the pair's profile. The
    pair's reasoning-end marker is used unless ``config`` sets one.

    ``speculative`` (llamacpp only): ``draft`` decodes the large model's tokens speculatively with
    ``draft_model`` (default: the pair's small model, in a context of its own), ``lookup`` drafts by
    prompt lookup, ``off`` does neither, ``auto`` (default) picks ``draft`` when the large model runs
    on a GPU and ``off`` on a CPU, where verifying a batch costs nearly as much as decoding it token by
    token (see README, speculative decoding). ``draft_max`` caps the tokens per draft.
    """
    if speculative not in SPECULATIVE_MODES:
        raise ConfigError(f"speculative must be one of {', '.join(SPECULATIVE_MODES)}, not {speculative!r}")
    if speculative in ("draft", "lookup") and backend != "llamacpp":
        raise ConfigError(f"speculative decoding is implemented for the llamacpp backend, not {backend}")
    if isinstance(draft_max, bool) or not isinstance(draft_max, int) or not 1 <= draft_max <= 64:
        raise ConfigError(f"draft_max must be an integer in 1..64, got {draft_max!r}")
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
    if backend == "openai" and not (large_url and small_url):
        raise ConfigError("the openai backend needs the two servers' URLs: large_url= and small_url= "
                          "(--large-url, --small-url)")
    if backend != "openai" and (large_url or small_url):
        raise ConfigError("server URLs are for backend='openai'")
    with ExitStack() as loaded:  # a failure part-way closes what was loaded (up to three models)
        if backend == "openai":
            large_backend = load_backend(large_url, backend, registry, template_from=large_name, **backend_options)
            loaded.callback(large_backend.close)
            small_backend = load_backend(small_url, backend, registry, template_from=small_name, **backend_options)
        else:
            large_backend = load_backend(large_name, backend, registry, progress, **backend_options)
            loaded.callback(large_backend.close)  # a llama.cpp backend closes its drafter's model with its own
            if backend == "hf" and _model_file(small_name, registry, progress) == large_backend.path:
                small_backend = type(large_backend).sharing_weights(large_backend)  # one copy of the weights
            else:
                small_backend = load_backend(small_name, backend, registry, progress, **backend_options)
        loaded.callback(small_backend.close)
        if backend == "llamacpp":
            mode = resolve_speculative(speculative, large_backend)
            if mode == "draft":
                from .speculative import DraftModel

                draft_backend = load_backend(draft_model or small_name, backend, registry, progress, **backend_options)
                large_backend.set_drafter(DraftModel(draft_backend, max_tokens=draft_max))
            elif mode == "lookup":
                from .speculative import prompt_lookup

                large_backend.set_drafter(prompt_lookup(draft_max))
        engine = RelayEngine(large_backend, small_backend, cue_profile, config)
        loaded.pop_all()  # the engine owns them now
    return engine


SPECULATIVE_MODES = ("auto", "off", "draft", "lookup")


def resolve_speculative(mode: str, large_backend) -> str:
    """``auto``: draft-model speculation when the large model is offloaded to a GPU, else off."""
    if mode != "auto":
        return mode
    import llama_cpp

    on_gpu = getattr(large_backend, "n_gpu_layers", 0) != 0 and llama_cpp.llama_supports_gpu_offload()
    return "draft" if on_gpu else "off"
