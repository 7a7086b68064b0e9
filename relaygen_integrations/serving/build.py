"""Building a concurrent engine from a spec, by how the chosen backend serves concurrent requests
(``Backend.concurrency``, declared by its class): one shared batched context per model ("batched",
llama.cpp), engines of their own over the same servers ("independent"), or one engine ("single")."""

from __future__ import annotations

import functools
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

from ..backends import backend_class
from ..core.engine import RelayEngine
from ..errors import ConfigError
from ..loader import build, load_backend, relay_settings, resolve_pair
from ..options import RelaySpec
from .pool import ConcurrentEngine


def load_concurrent(pair: str | None = None, **options: Any) -> ConcurrentEngine:
    """A ``ConcurrentEngine`` serving up to ``max_batch`` requests at once (``queue_timeout``: how long one
    more waits for a free sequence); the options are ``load_pair``'s."""
    return build_concurrent(RelaySpec.from_mapping({"pair": pair, **options}))


def build_concurrent(spec: RelaySpec, scoring: bool = False) -> ConcurrentEngine:
    """``scoring``: each loaded llama.cpp model keeps a context of the full ``n_ctx`` of its own (lm-eval
    scores with it), otherwise only a tokenizer's."""
    concurrency = backend_class(spec.backend).concurrency
    if concurrency == "independent":
        slots: list[RelayEngine] = []
        try:
            for _ in range(spec.max_batch):
                slots.append(build(replace(spec, max_batch=1)))
        except BaseException:
            _close_slots(slots)
            raise
        return ConcurrentEngine(slots, queue_timeout=spec.queue_timeout, on_close=lambda: _close_slots(slots))
    if concurrency == "single":
        if spec.max_batch != 1:
            raise ConfigError(f"max_batch={spec.max_batch}: batched requests run on llama.cpp (backend llamacpp) "
                              f"and on servers (backend openai); the {spec.backend} backend serves one at a time")
        engine = build(spec)
        return ConcurrentEngine([engine], queue_timeout=spec.queue_timeout, on_close=engine.close)
    if spec.speculative in ("draft", "lookup"):
        raise ConfigError("speculative decoding is not combined with batched requests yet: speculative='off'")
    return _batched_llamacpp(spec, scoring)


def _batched_llamacpp(spec: RelaySpec, scoring: bool) -> ConcurrentEngine:
    from ..core.scheduler import Scheduler
    from .llamacpp import batched_engine

    resolved = resolve_pair(spec)
    config, cue_profile = relay_settings(spec, resolved)
    options = dict(spec.backend_options)
    n_ctx, n_batch = options.pop("n_ctx", 4096), options.pop("n_batch", 512)
    own = {"n_ctx": n_ctx, "n_batch": n_batch} if scoring else {"n_ctx": 64, "n_batch": 64}
    scheduler = Scheduler()
    with ExitStack() as loaded:  # the sequences live in the shared contexts
        loaded.callback(scheduler.close)
        # Loaded on the thread that evaluates: llama.cpp's OpenMP build keeps a thread team per calling thread,
        # and loading repacks the weights in parallel, so loading elsewhere leaves a second team behind
        # (every decode then runs about 1.4x slower here).
        large = scheduler.call(functools.partial(load_backend, resolved.large, "llamacpp", resolved.registry,
                                                 spec.progress, **own, **options))
        loaded.callback(large.close)
        small = scheduler.call(functools.partial(load_backend, resolved.small, "llamacpp", resolved.registry,
                                                 spec.progress, **own, **options))
        loaded.callback(small.close)
        engine = batched_engine(large, small, cue_profile, config, spec.max_batch, n_ctx, n_batch, spec.queue_timeout,
                                options.get("n_threads"), options.get("flash_attn", False), scheduler=scheduler)
        loaded.pop_all()
    return engine


def _close_slots(slots: list[RelayEngine]) -> None:
    for engine in slots:
        engine.close()
