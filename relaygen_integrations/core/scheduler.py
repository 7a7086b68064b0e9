"""Rounds of batched evaluation for concurrent requests: the batched engine's clock.

Each concurrent request runs its relay in a thread of its own and, whenever a model must evaluate
something (a new position, a catch-up, a checked sentence's rows), submits a ``Job`` and waits. The
scheduler's one thread runs rounds: it waits until every running request has submitted (or a short
gather window has passed, so that a request busy elsewhere never stalls the others), then gives each
model all of its jobs at once (one ``llama_decode`` for several sequences) and wakes the requests.
One thread does every evaluation, as llama.cpp's OpenMP build wants (``serving/llamacpp.py``).
Requests join and leave between rounds (continuous batching).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ..errors import RelayGenError

GATHER_SECONDS = 0.02  # how long a round waits for requests still busy between evaluations


class Model(Protocol):
    """What the scheduler drives: one model that evaluates many sequences' jobs in one call."""

    def run(self, jobs: Sequence["Job"]) -> int:
        """Evaluate as much of ``jobs`` as one call holds, in order, setting ``result`` on each job it
        finishes (a job too long for the call keeps its rest in ``tokens``); return the tokens evaluated."""


@dataclass(eq=False)
class Job:
    """One sequence's pending evaluation: append ``tokens`` at position ``start`` (what the sequence
    held past it is dropped) and return the logits after the last token, or after each (``rows``)."""

    model: Model
    seq: int
    start: int
    tokens: list[int]
    rows: bool = False
    result: np.ndarray | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    parts: list[np.ndarray] = field(default_factory=list)  # rows of the chunks evaluated so far


class Scheduler:
    def __init__(self, gather_seconds: float = GATHER_SECONDS):
        self.gather_seconds = gather_seconds
        self._cv = threading.Condition()
        self._pending: list[Job] = []
        self._members = 0  # requests running now
        self._closed = False
        self.rounds = 0
        self.widest = 0  # the most sequences one model evaluated in one call so far
        self.calls = 0  # model calls so far, and the sequences they evaluated (their mean: how much batching)
        self.sequences = 0
        self.busy_seconds = 0.0  # time spent in model calls (the rest of a request's time is Python and waiting)
        self._thread = threading.Thread(target=self._loop, name="relaygen-models", daemon=True)
        self._thread.start()

    # --- the requests' side ----------------------------------------------------------------------
    def join(self) -> None:
        with self._cv:
            self._members += 1

    def leave(self) -> None:
        with self._cv:
            self._members -= 1
            self._cv.notify_all()  # a round may have been waiting for this request

    def submit(self, job: Job) -> np.ndarray:
        """Queue ``job`` for the next round and wait for its logits."""
        with self._cv:
            if self._closed:
                raise RelayGenError("the engine is closed")
            self._pending.append(job)
            self._cv.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    # --- the model thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed and not self._pending:
                    return
                deadline = time.monotonic() + self.gather_seconds
                while len(self._pending) < self._members and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
            self.step()

    def step(self) -> None:
        """One round: every model evaluates its queued jobs in one call; finished jobs wake their requests."""
        with self._cv:
            jobs, self._pending = self._pending, []
        by_model: dict[int, list[Job]] = {}
        for job in jobs:
            by_model.setdefault(id(job.model), []).append(job)
        unfinished = []
        for group in by_model.values():
            model = group[0].model
            t0 = time.perf_counter()
            try:
                model.run(group)
            except BaseException as e:  # a failed call fails every job in it, never the thread
                for job in group:
                    job.error = e
                    job.done.set()
                continue
            finally:
                self.busy_seconds += time.perf_counter() - t0
            self.widest = max(self.widest, len(group))
            self.calls += 1
            self.sequences += len(group)
            for job in group:
                if job.result is not None:
                    job.done.set()
                else:
                    unfinished.append(job)  # too long for one call: the rest goes in the next round
        if unfinished:
            with self._cv:
                self._pending[:0] = unfinished
        self.rounds += 1

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for job in self._pending:
                job.error = RelayGenError("the engine is closed")
                job.done.set()
            self._pending = []
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def call(self, fn, *args):
        """Run ``fn`` on the model thread (loading or freeing a context) and return its result."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        box: dict = {}

        class _Once:
            def run(self, jobs):
                box["value"] = fn(*args)  # an exception fails the job, and submit raises it here
                for job in jobs:
                    job.result = np.empty(0)
                return 0

        self.submit(Job(_Once(), -1, 0, []))
        return box.get("value")
