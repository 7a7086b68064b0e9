"""The batched llama.cpp engine: ``max_batch`` relays whose sequences live in one shared context per model
(``backends/llamacpp_batch.py``) and are evaluated together in the scheduler's rounds."""

from __future__ import annotations

from contextlib import ExitStack

from ..backends.llamacpp import LlamaCppBackend
from ..backends.llamacpp_batch import SequenceBackend, SharedContext
from ..core.engine import RelayEngine
from ..core.scheduler import Scheduler
from .pool import ConcurrentEngine


def batched_engine(large: LlamaCppBackend, small: LlamaCppBackend, profile=None, config=None, max_batch: int = 4,
                   n_ctx: int = 4096, n_batch: int = 512, queue_timeout: float = 600.0, n_threads: int | None = None,
                   flash_attn: bool = False, owns_models: bool = True, scheduler: Scheduler | None = None):
    """A ``ConcurrentEngine`` of ``max_batch`` relays over two loaded models, each model's sequences in
    one shared context of ``n_ctx`` tokens per sequence. Closing it frees the contexts (and the models,
    with ``owns_models``). ``scheduler``: the one whose thread loaded the models, if one did."""
    with ExitStack() as owned:
        if owns_models:
            owned.callback(large.close)
            owned.callback(small.close)
        scheduler = scheduler or Scheduler()
        owned.callback(scheduler.close)
        shared = []
        for base in (large, small):
            shared.append(scheduler.call(SharedContext, base, max_batch, n_ctx, n_batch, n_threads, flash_attn))
            owned.callback(shared[-1].close)
        slots = [RelayEngine(SequenceBackend(shared[0], i, scheduler), SequenceBackend(shared[1], i, scheduler),
                             profile, config) for i in range(max_batch)]
        closers = owned.pop_all()
    return ConcurrentEngine(slots, scheduler, queue_timeout, on_close=closers.close)
