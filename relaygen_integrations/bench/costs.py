"""A cost model: how long a model takes to evaluate n tokens in one call, measured on this machine,
and the run time it predicts for an answer from the evaluation calls the answer needed.

Decoding is one call per token; a prompt, a hand-off catch-up (the tokens the other model wrote) or a
speculative verification is one call of many tokens. On a GPU a call of a few tokens costs about what
one token costs; on a CPU it costs nearly n times as much. Measuring ``seconds(n)`` for a range of n
captures both, so the same counts predict relay and speculative speedups on any machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

# call sizes measured: decode steps, verification batches (draft + 1), catch-ups, prompts
SIZES = (1, 2, 3, 4, 5, 6, 8, 9, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
# calls that keep every row: verification batches (the drafted tokens) and checked sentences (their catch-up)
ROW_SIZES = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64)
CONTEXT = 256  # tokens already in the cache when a call is timed (a typical mid-answer position)


def _interpolate(n: int, sizes: list[int], seconds: list[float]) -> float:
    """Interpolated between measured sizes, extrapolated per token past the largest."""
    if n <= sizes[-1]:
        return float(np.interp(n, sizes, seconds))
    per_token = (seconds[-1] - seconds[-2]) / (sizes[-1] - sizes[-2])
    return seconds[-1] + (n - sizes[-1]) * per_token


@dataclass
class UnitCosts:
    """Median seconds of one evaluation call by size: a call evaluates n tokens, reads the last
    position's logits and chooses a token; a row call (speculative verification) reads every
    position's logits and checks each drafted token, which costs more (one output layer per row)."""

    sizes: list[int]
    seconds: list[float]
    row_sizes: list[int] | None = None
    row_seconds: list[float] | None = None

    def call(self, n: int) -> float:
        """Seconds for one call of ``n`` tokens."""
        return _interpolate(n, self.sizes, self.seconds)

    def row_call(self, n: int) -> float:
        """Seconds for one call of ``n`` tokens that keeps every position's logits."""
        if not self.row_sizes:
            return self.call(n)
        return _interpolate(n, self.row_sizes, self.row_seconds)

    def predict(self, calls: dict, row_calls: dict | None = None) -> float:
        """Seconds for a histogram of call sizes ``{size: count}`` (JSON keys may be strings), of which
        those in ``row_calls`` kept every position's logits."""
        total = sum(int(count) * self.call(int(size)) for size, count in calls.items())
        for size, count in (row_calls or {}).items():
            total += int(count) * (self.row_call(int(size)) - self.call(int(size)))
        return total

    def scaled(self, factor: float) -> "UnitCosts":
        rows = None if self.row_seconds is None else [t * factor for t in self.row_seconds]
        return UnitCosts(list(self.sizes), [t * factor for t in self.seconds], self.row_sizes, rows)

    @property
    def decode(self) -> float:
        return self.call(1)

    @property
    def prefill_per_token(self) -> float:
        return self.call(self.sizes[-1]) / self.sizes[-1]

    def to_dict(self) -> dict:
        return asdict(self)


def memory_bound(costs: UnitCosts, batch: int = 64) -> UnitCosts:
    """The same decode cost on hardware where decoding is memory-bound (GPUs, Apple silicon): a call of up
    to ``batch`` tokens costs one decode step, longer ones proportionally more. A what-if, not a measurement."""
    def bound(sizes: list[int]) -> list[float]:
        return [costs.decode * max(1.0, n / batch) for n in sizes]

    rows = None if costs.row_sizes is None else bound(costs.row_sizes)
    return UnitCosts(list(costs.sizes), bound(costs.sizes), costs.row_sizes, rows)


def measure(backends: dict, tokens: Sequence[int], sizes: Sequence[int] = SIZES, repeats: int = 3,
            context: int = CONTEXT, row_sizes: Sequence[int] = ROW_SIZES) -> dict[str, UnitCosts]:
    """Time calls of each size after ``context`` tokens of ``tokens`` (real text, so the cache holds
    realistic content), for each backend of ``{name: backend}``. Each call is one ``next_token``
    (evaluate, read logits, choose greedily), as the engine makes them. The models take turns call by
    call and the sweep is repeated, so a slow spell of the machine hits every model and size alike;
    each size's median is kept. Caches are reset afterwards. A server backend is timed the same way over
    HTTP (``_measure_server``): what a call costs there includes the round trip."""
    from ..backends.local import LocalBackend
    from ..core.sampling import Sampler, SamplingParams

    if not all(isinstance(b, LocalBackend) for b in backends.values()):
        return _measure_server(backends, tokens, sizes, repeats, context, row_sizes)

    need = context + max(sizes)
    if len(tokens) < need:
        tokens = list(tokens) * (need // max(1, len(tokens)) + 1)
    tokens = list(tokens[:need])
    sampler = Sampler(SamplingParams(temperature=0))
    for b in backends.values():
        b.reset()
        b.sync(tokens[:context])
    times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in sizes} for name in backends}
    rows: dict[str, dict[int, list[float]]] = {name: {n: [] for n in row_sizes} for name in backends}
    for _ in range(repeats):
        for n in sizes:
            for name, b in backends.items():
                b.sync(tokens[:context])  # drop the previous extension (one token re-evaluated, untimed)
                t0 = time.perf_counter()
                b.next_token(tokens[:context + n], sampler)
                times[name][n].append(time.perf_counter() - t0)
        for n in row_sizes:  # as the verification of a draft of n tokens: every row read and checked
            for name, b in backends.items():
                b.sync(tokens[:context])
                t0 = time.perf_counter()
                for row in np.vstack([b.logits()[None, :], b.evaluate_rows(tokens[context:context + n])]):
                    sampler(row)
                rows[name][n].append(time.perf_counter() - t0)
    for b in backends.values():
        b.reset()
    return {name: UnitCosts(list(sizes), [statistics.median(times[name][n]) for n in sizes], list(row_sizes),
                            [statistics.median(rows[name][n]) for n in row_sizes]) for name in backends}


def _measure_server(backends: dict, tokens: Sequence[int], sizes: Sequence[int], repeats: int, context: int,
                    row_sizes: Sequence[int]) -> dict[str, UnitCosts]:
    """Unit costs of server backends: a call of n tokens is a stream opened on a context whose first
    ``context`` tokens the server's prefix cache holds, read up to its first token; a row call is a scoring
    request of n tokens (where the server scores; otherwise the plain calls stand in)."""
    from ..core.sampling import Sampler, SamplingParams

    room = min(b.n_ctx for b in backends.values()) - 2  # a server refuses a request past its context
    context = min(context, room // 2)
    sizes = [n for n in sizes if context + n <= room] or [1]
    row_sizes = [n for n in row_sizes if context + n <= room] or [1]
    tokens = (list(tokens) * ((context + max(sizes)) // max(1, len(tokens)) + 1))[: context + max(sizes)]
    sampler = Sampler(SamplingParams(temperature=0, max_tokens=1).validated())
    times = {name: {n: [] for n in sizes} for name in backends}
    rows = {name: {n: [] for n in row_sizes} for name in backends if backends[name].can_check()}
    for b in backends.values():
        b.reset()
        b.next_token(tokens[:context], sampler)  # the server caches the shared prefix
        b.pause()
    for _ in range(repeats):
        for n in sizes:
            for name, b in backends.items():
                t0 = time.perf_counter()
                b.next_token(tokens[:context + n], sampler)
                times[name][n].append(time.perf_counter() - t0)
                b.pause()
        for n in row_sizes:
            for name in rows:
                t0 = time.perf_counter()
                backends[name].check_rows(tokens[:context + n], n)
                rows[name][n].append(time.perf_counter() - t0)
    for b in backends.values():
        b.reset()
    return {name: UnitCosts(list(sizes), [statistics.median(times[name][n]) for n in sizes],
                            list(row_sizes) if name in rows else None,
                            [statistics.median(rows[name][n]) for n in row_sizes] if name in rows else None)
            for name in backends}


def relay_what_if(large: UnitCosts, small: UnitCosts, large_share: float, tokens: int = 300,
                  segment_tokens: float = 15.0) -> float:
    """Predicted relay speedup over the large model alone for an answer of ``tokens`` tokens of which
    ``large_share`` are the large model's, the small model writing segments of ``segment_tokens``.

    Per switch the small model first catches up on the large model's text since its last turn (one
    call), writes its segment plus one look-ahead token that confirms the sentence end, and the large
    model then catches up on the segment in the call that gives its next token."""
    small_tokens = (1 - large_share) * tokens
    switches = small_tokens / segment_tokens
    if switches < 1e-9:
        return 1.0
    large_tokens = tokens - small_tokens
    run = large_tokens / switches  # large-model tokens between switches
    relay = ((large_tokens - switches) * large.decode + switches * large.call(round(segment_tokens))
             + small_tokens * small.decode + switches * small.call(max(1, round(run))))
    return tokens * large.decode / relay
