"""Many requests at once over one pair: ``ConcurrentEngine`` over a ``SequencePool``.

A ``RelayEngine`` is one pair of KV caches, so it runs one request at a time. A ``SequencePool`` holds
``max_batch`` pairs of sequences (for llama.cpp, sequences of one shared context per model, evaluated
together in the scheduler's rounds, ``core/scheduler.py``; for servers, backends of their own: the servers
batch) and leases them to requests, last in first out (one request after another lands on the same
sequence and reuses its cache). A ``ConcurrentEngine`` is one relay configuration over a pool: a request is
prepared once on the caller's thread, waits up to ``queue_timeout`` seconds for a free sequence, and runs
in one of the pool's worker threads (``max_batch`` of them, reused: a library that keeps per-thread
state, like OpenMP's thread teams, sees the same few threads), which hands its events to the reader, so
a slow reader never holds the others back. ``variant`` gives another configuration over the same pool:
a benchmark's methods share one loaded pair and never one sequence. Closing a stream early (a client that
went away) cancels its request: it stops at its next model step and frees its sequence.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

from ..core.engine import RelayEngine, final_result
from ..core.events import RelayEvent, RelayResult
from ..core.request import Request
from ..core.sampling import SamplingParams
from ..errors import ConfigError, QueueTimeoutError

if TYPE_CHECKING:
    from ..core.scheduler import Scheduler

_END = object()


class SequencePool:
    """``size`` sequence pairs leased to requests, the worker threads that run them, and the scheduler
    whose rounds they join (llama.cpp). ``on_close`` frees what the pool's sequences live in."""

    def __init__(self, size: int, scheduler: "Scheduler | None" = None, on_close: Callable[[], None] | None = None):
        self.size, self.scheduler, self._on_close = size, scheduler, on_close
        self._free: queue.LifoQueue[int] = queue.LifoQueue()
        for i in range(size):
            self._free.put(i)
        self.workers = ThreadPoolExecutor(max_workers=size, thread_name_prefix="relaygen-request")
        self.active = 0  # requests running now
        self._lock = threading.Lock()

    @property
    def free(self) -> int:
        return self._free.qsize()

    def lease(self, timeout: float) -> int:
        try:
            return self._started(self._free.get(timeout=timeout))
        except queue.Empty:
            raise QueueTimeoutError(f"waited {timeout:g} s for a free sequence: all {self.size} (max_batch) are "
                                    "serving other requests; raise max_batch or queue_timeout") from None

    def try_lease(self) -> int | None:
        """A free sequence now, or None (an event loop must not block waiting for one)."""
        try:
            return self._started(self._free.get_nowait())
        except queue.Empty:
            return None

    def _started(self, slot: int) -> int:
        with self._lock:
            self.active += 1
            if self.scheduler is not None:
                self.scheduler.join()  # before the request starts: a round must wait for it
        return slot

    def release(self, slot: int) -> None:
        with self._lock:
            self.active -= 1
            if self.scheduler is not None:
                self.scheduler.leave()
        self._free.put(slot)

    def close(self) -> None:
        self.workers.shutdown(wait=False)
        if self.scheduler is not None:
            self.scheduler.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


class ConcurrentEngine:
    """``slots[i]`` runs the requests that lease sequence ``i`` of the pool (made from the slots when
    ``pool`` is not given). The API is ``RelayEngine``'s, plus ``astream`` for an event loop."""

    def __init__(self, slots: list[RelayEngine], scheduler: "Scheduler | None" = None, queue_timeout: float = 600.0,
                 on_close: Callable[[], None] | None = None, *, pool: SequencePool | None = None):
        if not slots:
            raise ConfigError("a concurrent engine needs at least one slot")
        if isinstance(queue_timeout, bool) or not isinstance(queue_timeout, (int, float)) \
                or not 0 < queue_timeout < math.inf:
            raise ConfigError(f"queue_timeout must be a positive number of seconds, not {queue_timeout!r}")
        self.slots, self.queue_timeout = slots, float(queue_timeout)
        self._owns_pool = pool is None
        self.pool = pool or SequencePool(len(slots), scheduler, on_close)

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
    def check_policy(self):
        return self.slots[0].check_policy

    @property
    def large(self):
        return self.slots[0].large

    @property
    def small(self):
        return self.slots[0].small

    @property
    def scheduler(self):
        return self.pool.scheduler

    @property
    def active(self) -> int:
        """Requests running now (on this engine and its variants: they share the pool)."""
        return self.pool.active

    def prepare(self, prompt, params: SamplingParams | None = None, *, chat: bool = True) -> Request:
        """The request, prepared once here on the caller's thread; whichever sequence serves it runs it."""
        return self.slots[0].prepare(prompt, params, chat=chat)

    check = prepare

    def generate(self, prompt, params: SamplingParams | None = None, *, chat: bool = True,
                 timeout: float | None = None) -> RelayResult:
        return final_result(self.stream(prompt, params, chat=chat, timeout=timeout))

    def stream(self, prompt, params: SamplingParams | None = None, *, chat: bool = True,
               timeout: float | None = None) -> Iterator[RelayEvent]:
        """The request's events; a bad request fails here, at the call. ``timeout``: seconds to wait for
        a free sequence (default ``queue_timeout``); closing the stream early cancels the request."""
        request = prompt if isinstance(prompt, Request) else self.prepare(prompt, params, chat=chat)
        return self._serve(request, self.queue_timeout if timeout is None else timeout)

    def _serve(self, request: Request, timeout: float) -> Iterator[RelayEvent]:
        slot = self.pool.lease(timeout)
        events: queue.SimpleQueue = queue.SimpleQueue()
        self.pool.workers.submit(self._produce, slot, request, events.put)
        ended = False
        try:
            while (item := events.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                ended = item.kind == "done"  # the result is out: the request is whole
                yield item
        finally:
            if not ended:  # closed before its result (a client gone): nothing more is wanted
                request.cancel()

    async def astream(self, prompt, params: SamplingParams | None = None, *, chat: bool = True,
                      timeout: float | None = None) -> AsyncIterator[RelayEvent]:
        """``stream`` for an event loop: the worker posts each event to the loop, no thread in between.
        Prepare the request first (``prepare``) to fail a bad one before the stream is iterated."""
        request = prompt if isinstance(prompt, Request) else self.prepare(prompt, params, chat=chat)
        loop = asyncio.get_running_loop()
        slot = self.pool.try_lease()
        if slot is None:  # wait for a sequence off the loop
            slot = await asyncio.to_thread(self.pool.lease, self.queue_timeout if timeout is None else timeout)
        events: asyncio.Queue = asyncio.Queue()

        def post(item) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody reads this request any more
                request.cancel()

        self.pool.workers.submit(self._produce, slot, request, post)
        ended = False
        try:
            while (item := await events.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                ended = item.kind == "done"  # the result is out: the request is whole
                yield item
        finally:
            if not ended:
                request.cancel()

    def _produce(self, slot: int, request: Request, post: Callable[[object], None]) -> None:
        try:
            with closing(self.slots[slot].stream(request)) as stream:
                for event in stream:
                    request.raise_if_cancelled()
                    post(event)
        except BaseException as e:  # the reader raises it (Cancelled too, if anyone still reads)
            post(e)
        finally:
            self.pool.release(slot)
            post(_END)

    def variant(self, config, profile=None) -> "ConcurrentEngine":
        """Other relay settings over the same sequences (a benchmark's methods over one loaded pair): a
        request of either leases from the one pool; closing the variant frees nothing of the pool."""
        slots = [RelayEngine(s.large, s.small, profile or s.profile, config) for s in self.slots]
        return ConcurrentEngine(slots, queue_timeout=self.queue_timeout, pool=self.pool)

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()
