"""Many requests at once over one pair: ``ConcurrentEngine``.

A ``RelayEngine`` is one pair of KV caches, so it runs one request at a time. A ``ConcurrentEngine``
holds ``max_batch`` of them (slots), each over its own pair of sequences: for llama.cpp, sequences of
one shared context per model, evaluated together in the scheduler's rounds (``scheduler.py``); for
servers, backends of their own (nothing per request is shared, the servers batch). Each request runs
in a worker thread (``max_batch`` of them, reused: a library that keeps per-thread state, like
OpenMP's thread teams, sees the same few threads) and hands its events to the reader through a queue,
so a slow reader never holds the others back; a request beyond ``max_batch`` waits for a slot up to ``queue_timeout`` seconds.
A stream closed early (a client that went away) stops its request at its next evaluation and frees
its slot. The API is the engine's: ``generate``, ``stream``, ``check``.
"""

from __future__ import annotations

import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Callable, Iterator

from ..errors import ConfigError, QueueTimeoutError
from .engine import RelayEngine
from .events import RelayEvent, RelayResult
from .sampling import SamplingParams
from .scheduler import Cancelled, Scheduler

_END = object()


class ConcurrentEngine:
    def __init__(self, slots: list[RelayEngine], scheduler: Scheduler | None = None,
                 queue_timeout: float = 600.0, on_close: Callable[[], None] | None = None):
        if not slots:
            raise ConfigError("a concurrent engine needs at least one slot")
        if isinstance(queue_timeout, bool) or not isinstance(queue_timeout, (int, float)) \
                or not 0 < queue_timeout < math.inf:
            raise ConfigError(f"queue_timeout must be a positive number of seconds, not {queue_timeout!r}")
        self.slots, self.scheduler, self.queue_timeout = slots, scheduler, float(queue_timeout)
        # Last in, first out: one request after another lands on the same sequence and reuses its cache.
        self._free: queue.LifoQueue[RelayEngine] = queue.LifoQueue()
        for slot in slots:
            self._free.put(slot)
        self._workers = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="relaygen-request")
        self._on_close = on_close
        self._owns_scheduler = True
        self._active = 0
        self._lock = threading.Lock()

    # What entry points read off an engine: the first slot's (all slots are alike).
    @property
    def max_batch(self) -> int:
        return len(self.slots)

    @property
    def config(self):
        return self.slots[0].config

    @property
    def profile(self):
        return self.slots[0].profile

    @property
    def large(self):
        return self.slots[0].large

    @property
    def small(self):
        return self.slots[0].small

    @property
    def active(self) -> int:
        """Requests running now."""
        return self._active

    def check(self, prompt, params: SamplingParams | None = None, *, chat: bool = True) -> None:
        self.slots[0].check(prompt, params, chat=chat)

    def generate(self, prompt, params: SamplingParams | None = None, *, chat: bool = True,
                 timeout: float | None = None) -> RelayResult:
        for event in self.stream(prompt, params, chat=chat, timeout=timeout):
            if event.kind == "done":
                return event.result
        raise RuntimeError("relay stream ended without a result")  # pragma: no cover

    def stream(self, prompt, params: SamplingParams | None = None, *, chat: bool = True,
               timeout: float | None = None) -> Iterator[RelayEvent]:
        """The request's events; a bad request fails here, at the call. ``timeout``: seconds to wait for
        a free slot (default ``queue_timeout``); closing the stream early cancels the request."""
        params = (params or SamplingParams()).validated()
        self.check(prompt, params, chat=chat)
        return self._serve(prompt, params, chat, self.queue_timeout if timeout is None else timeout)

    def _serve(self, prompt, params: SamplingParams, chat: bool, timeout: float) -> Iterator[RelayEvent]:
        try:
            slot = self._free.get(timeout=timeout)
        except queue.Empty:
            raise QueueTimeoutError(f"waited {timeout:g} s for a free sequence: all {self.max_batch} (max_batch) "
                                    "are serving other requests; raise max_batch or queue_timeout") from None
        events: queue.SimpleQueue = queue.SimpleQueue()
        cancelled = threading.Event()
        with self._lock:
            self._active += 1
            if self.scheduler is not None:
                self.scheduler.join()  # before the request starts: a round must wait for it
        self._workers.submit(self._produce, slot, prompt, params, chat, events, cancelled)
        try:
            while (item := events.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()  # read to its end or closed early: either way nothing more is wanted

    def _produce(self, slot: RelayEngine, prompt, params, chat, events, cancelled: threading.Event) -> None:
        for backend in (slot.large, slot.small):
            backend.cancelled = cancelled
        try:
            with closing(slot.stream(prompt, params, chat=chat)) as stream:
                for event in stream:
                    if cancelled.is_set():
                        break
                    events.put(event)
        except Cancelled:
            pass
        except BaseException as e:  # the reader raises it
            events.put(e)
        finally:
            with self._lock:
                self._active -= 1
                if self.scheduler is not None:
                    self.scheduler.leave()
            self._free.put(slot)
            events.put(_END)

    def variant(self, config, profile=None) -> "ConcurrentEngine":
        """The same sequences with other relay settings (a benchmark's methods over one loaded pair): use
        one of the two at a time, they share the sequences; closing the variant closes only its workers."""
        slots = [RelayEngine(s.large, s.small, profile or s.profile, config) for s in self.slots]
        other = ConcurrentEngine(slots, self.scheduler, self.queue_timeout)
        other._owns_scheduler = False
        return other

    def close(self) -> None:
        self._workers.shutdown(wait=False)
        if self.scheduler is not None and self._owns_scheduler:
            self.scheduler.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
