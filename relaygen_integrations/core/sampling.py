"""Sampling parameters and one sampler shared by every backend, so a seed means the same everywhere.

Both models use the same sampling (as in the paper). Backends only hand over next-token logits; the
choice of token happens here, in numpy, identically for llama.cpp and transformers.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings. Defaults follow the paper (Qwen3 sampling)."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    seed: int | None = None
    max_tokens: int = 1024  # every generated token of both models counts
    stop: tuple[str, ...] = field(default_factory=tuple)

    def validated(self) -> "SamplingParams":
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        for name in ("top_k", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, numbers.Integral) or self.max_tokens <= 0:
            raise ConfigError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise ConfigError("stop strings must be non-empty strings")
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(4), "little")
        return replace(self, stop=stop, seed=seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def probability_margin(logits: np.ndarray) -> float:
    """p(top-1) - p(top-2) of the softmax over the full vocabulary."""
    return float(probability_margins(logits[None, :])[0])


def probability_margins(logits: np.ndarray) -> np.ndarray:
    """Row-wise p(top-1) - p(top-2) for a (positions, vocab) block of logits (float32 math, float64 sums:
    a float64 exp over a 150k vocabulary would cost 20x more for no visible precision)."""
    logits = np.asarray(logits, dtype=np.float32)
    rows = np.arange(logits.shape[0])
    best = logits.argmax(axis=1)
    top1 = logits[rows, best]
    rest = logits.copy()
    rest[rows, best] = -np.inf
    second = rest.max(axis=1)
    z = np.exp(logits - top1[:, None]).sum(axis=1, dtype=np.float64)
    return (1.0 - np.exp((second - top1).astype(np.float64))) / z


def target_logprobs(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log-softmax probability of ``targets`` in a (positions, vocab) block of logits, and
    whether each target was the row's most likely token (float32 differences, float64 sums)."""
    logits = np.asarray(logits, dtype=np.float32)
    rows = np.arange(logits.shape[0])
    top = logits.max(axis=1)
    log_z = np.log(np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64))
    chosen = logits[rows, targets]
    return (chosen - top).astype(np.float64) - log_z, chosen >= top


class Sampler:
    """Draws tokens for one request: greedy at temperature 0, else temperature + top-k + top-p."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        p = self.params
        if p.greedy:
            return int(np.argmax(logits))
        k = p.top_k if 0 < p.top_k < logits.shape[0] else logits.shape[0]
        ids = np.argpartition(logits, -k)[-k:] if k < logits.shape[0] else np.arange(logits.shape[0])
        scaled = logits[ids].astype(np.float64) / p.temperature
        order = np.argsort(-scaled, kind="stable")
        ids, scaled = ids[order], scaled[order]
        probs = np.exp(scaled - scaled[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
        return int(ids[self.rng.choice(len(ids), p=probs)])
