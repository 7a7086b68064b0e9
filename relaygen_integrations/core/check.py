"""Checking a small-model sentence with the large model's own rows: which prefix to keep (checked relay).

When the large model takes control back it evaluates the small model's sentence anyway, to catch up; keeping
every row of that one call gives its distribution at each small token for free. A policy walks the rows in
order and keeps the longest prefix it accepts. At the first rejected token the sentence is cut there, and the
large model's own token, drawn with the request's sampler from the row it already has, takes its place.

    off        every token kept (the unchecked relay)
    tau=P      BiLD's rollback rule (Kim et al., NeurIPS 2023): cut at the first small token whose probability
               under the large model (its plain softmax, temperature 1) is below P, unless the large model's
               own draw at that position is that token anyway (a flat distribution must not cause a cut that
               changes nothing)
    exact      sample-and-match at every position, as speculative verification (``speculative.verify``): the
               output is distributed exactly as the large model's alone (up to batch numerics), so the relay
               becomes lossless sentence-length speculative decoding with cue-triggered drafts

Only the engine's wiring (rows, rollback, statistics) lives elsewhere; this module is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class CheckPolicy:
    kind: Literal["off", "tau", "exact"] = "off"
    tau: float = 0.0  # for kind "tau": the probability below which a small token is rejected

    @classmethod
    def parse(cls, spec: "CheckPolicy | str | float | None") -> "CheckPolicy":
        """``None``/``"off"``, ``"exact"``, ``"tau=0.01"``, ``"0.01"`` or a number in (0, 1)."""
        if isinstance(spec, CheckPolicy):
            return spec.validated()
        if spec is None or spec == "off":
            return cls()
        if spec == "exact":
            return cls("exact")
        text = spec[4:] if isinstance(spec, str) and spec.startswith("tau=") else spec
        try:
            tau = float(text)
        except (TypeError, ValueError):
            raise ConfigError(f"check must be auto, off, exact, or a probability threshold like tau=0.01, not {spec!r}") from None
        return cls("tau", tau).validated()

    def validated(self) -> "CheckPolicy":
        if self.kind not in ("off", "tau", "exact"):
            raise ConfigError(f"check policy must be off, tau or exact, not {self.kind!r}")
        if self.kind == "tau" and not (0 < self.tau < 1 and math.isfinite(self.tau)):
            raise ConfigError(f"the check threshold tau must be a probability in (0, 1), got {self.tau!r}")
        return self

    @property
    def active(self) -> bool:
        return self.kind != "off"

    def __str__(self) -> str:
        return f"tau={self.tau:g}" if self.kind == "tau" else self.kind


def token_probabilities(rows: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
    """The plain softmax probability of ``tokens[i]`` under ``rows[i]`` (float64 sums)."""
    rows = np.asarray(rows[: len(tokens)], dtype=np.float32)
    top = rows.max(axis=1)
    z = np.exp(rows - top[:, None]).sum(axis=1, dtype=np.float64)
    chosen = rows[np.arange(len(tokens)), np.asarray(tokens, dtype=np.int64)]
    return np.exp((chosen - top).astype(np.float64)) / z


class LogitRows:
    """In-process scores: the large model's full logit rows over the segment (and the row after it)."""

    requests = 0  # server round trips it took

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def probabilities(self, tokens: Sequence[int]) -> np.ndarray:
        return token_probabilities(self.rows, tokens)

    def draw(self, i: int, sample: Callable[[np.ndarray], int]) -> int:
        return sample(self.rows[i])


class Scores(Protocol):
    """What the check reads of the large model at each position of a segment: a token's probability and the
    model's own draw (``LogitRows`` in process; ``backends.server_scoring.TopRows`` from a server's top choices)."""

    requests: int

    def probabilities(self, tokens: Sequence[int]) -> np.ndarray: ...

    def draw(self, i: int, sample: Callable[[np.ndarray], int]) -> int: ...


def check_segment(policy: CheckPolicy, sample: Callable[[np.ndarray], int], rows: "np.ndarray | Scores",
                  tokens: Sequence[int]) -> tuple[int, int | None]:
    """``rows[i]``: the large model's logits predicting ``tokens[i]`` (or a ``Scores``). Returns ``(kept, own)``:
    how many leading tokens stand, and the large model's token at the cut (``None`` when every token stands).
    The sampler is asked only where the policy needs a draw, so an accepted sentence under ``tau`` uses no
    random numbers and ``exact`` uses them as decoding one token at a time would."""
    scores = LogitRows(rows) if isinstance(rows, np.ndarray) else rows
    if not policy.active or not len(tokens):
        return len(tokens), None
    if policy.kind == "exact":
        for i, token in enumerate(tokens):
            own = scores.draw(i, sample)
            if own != token:
                return i, own
        return len(tokens), None
    probabilities = scores.probabilities(tokens)
    for i in np.flatnonzero(probabilities < policy.tau):
        own = scores.draw(int(i), sample)
        if own != tokens[i]:
            return int(i), own
    return len(tokens), None
