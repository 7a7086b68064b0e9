"""Drafters: a second model with its own KV cache, or prompt lookup (no model at all).

The drafting protocol is llama-cpp-python's one-method ``LlamaDraftModel``: ``__call__(input_ids) ->
draft ids``, so any drafter written for ``llama_cpp.Llama(draft_model=...)`` works here. A drafter that
runs a model of its own declares more (``ModelDrafter``): its calls are metered, it hears how each of its
drafts fared, it forgets everything at a new request, and it owns its model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..backends.local import LocalBackend


class Drafter(Protocol):
    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray: ...


@runtime_checkable
class ModelDrafter(Protocol):
    backend: "LocalBackend"  # the draft model (its vocabulary must be the target's)

    def draft(self, context: list[int]) -> tuple[list[int], tuple[int, ...]]:
        """Proposed tokens after ``context``, and the sizes of the evaluation calls that made them."""

    def feedback(self, drafted: int, accepted: int) -> None:
        """How many of the last draft's tokens the target accepted."""

    def reset(self) -> None:
        """A new request: the draft depends on nothing that ran before."""

    def close(self) -> None: ...


class DraftModel:
    """Greedy drafts from a small model that keeps its own KV cache between calls (any local backend).

    Each call syncs the draft context to the target's tokens: only tokens it has not seen are
    evaluated, and tokens the target rejected are rolled back (``LocalBackend.sync``). It then proposes
    up to ``k`` tokens greedily, stopping at end of generation. ``k`` follows the recent acceptance
    rate a (an exponential moving average per drafted token): with per-token acceptance a, the
    expected run of accepted tokens is a / (1 - a), so k = that + 1, within [1, max_tokens].
    """

    def __init__(self, backend: "LocalBackend", max_tokens: int = 8, adaptive: bool = True,
                 initial_acceptance: float = 0.7, smoothing: float = 0.3):
        self.backend, self.max_tokens, self.adaptive = backend, max_tokens, adaptive
        self.initial_acceptance, self.smoothing = initial_acceptance, smoothing
        self._restart()

    def _restart(self) -> None:
        self.acceptance = self.initial_acceptance
        self.k = self.max_tokens if not self.adaptive else self._k_for(self.initial_acceptance)

    def _k_for(self, a: float) -> int:
        expected = a / (1 - a) if a < 1 else math.inf
        return int(max(1, min(self.max_tokens, round(expected) + 1)))

    def draft(self, context: list[int]) -> tuple[list[int], tuple[int, ...]]:
        limit = min(self.k, self.backend.n_ctx - len(context) - 1)
        draft: list[int] = []
        calls: list[int] = []
        while len(draft) < limit:
            n = self.backend.sync(context + draft)
            if n:
                calls.append(n)
            token = int(np.argmax(self.backend.logits()))
            if self.backend.is_end_of_generation(token):
                break
            draft.append(token)
        return draft, tuple(calls)

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        """llama-cpp-python's drafter protocol (``Llama(draft_model=DraftModel(...))`` works too)."""
        return np.asarray(self.draft([int(t) for t in input_ids])[0], dtype=np.intc)

    def feedback(self, drafted: int, accepted: int) -> None:
        if not self.adaptive or drafted == 0:
            return
        rate = accepted / drafted
        self.acceptance = (1 - self.smoothing) * self.acceptance + self.smoothing * rate
        self.k = self._k_for(self.acceptance)

    def reset(self) -> None:
        """An empty draft context and the initial draft length, so a request's drafts (and with them the
        target's verification batches) do not depend on the requests before it."""
        self.backend.reset()
        self._restart()

    def close(self) -> None:
        self.backend.close()


def prompt_lookup(max_tokens: int = 8, max_ngram: int = 3) -> Drafter:
    """Draft by finding the last ``max_ngram`` tokens earlier in the context and copying what followed
    (llama-cpp-python's prompt-lookup drafter: plain numpy, it runs no llama.cpp code)."""
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    return LlamaPromptLookupDecoding(max_ngram_size=max_ngram, num_pred_tokens=max_tokens)
