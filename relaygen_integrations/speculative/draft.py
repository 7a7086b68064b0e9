"""Drafters: a second GGUF model with its own KV cache, or prompt lookup (no model at all)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from llama_cpp.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

if TYPE_CHECKING:
    from ..backends.llamacpp import LlamaCppBackend


@runtime_checkable
class AdaptiveDrafter(Protocol):
    """What a drafter may add to llama-cpp-python's one-method ``LlamaDraftModel``: it hears how each of
    its drafts fared, and forgets everything at a new request (so a request drafts the same whatever ran
    before it). Prompt lookup has neither; ``DraftModel`` has both."""

    def feedback(self, drafted: int, accepted: int) -> None: ...

    def reset(self) -> None: ...


class DraftModel(LlamaDraftModel):
    """Greedy drafts from a small model that keeps its own llama.cpp context between calls.

    Each call syncs the draft context to the target's tokens: only tokens it has not seen are
    evaluated, and tokens the target rejected are rolled back (``Backend.sync``). It then proposes
    up to ``k`` tokens greedily, stopping at end of generation. ``k`` follows the recent acceptance
    rate a (an exponential moving average per drafted token): with per-token acceptance a, the
    expected run of accepted tokens is a / (1 - a), so k = that + 1, within [1, max_tokens].
    """

    def __init__(self, backend: "LlamaCppBackend", max_tokens: int = 8, adaptive: bool = True,
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

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        context = [int(t) for t in input_ids]
        limit = min(self.k, self.backend.n_ctx - len(context) - 1)
        draft: list[int] = []
        while len(draft) < limit:
            self.backend.sync(context + draft)
            token = int(np.argmax(self.backend.logits()))
            if self.backend.is_end_of_generation(token):
                break
            draft.append(token)
        return np.asarray(draft, dtype=np.intc)

    def feedback(self, drafted: int, accepted: int) -> None:
        """Called by the target after verification: how many of the drafted tokens it accepted."""
        if not self.adaptive or drafted == 0:
            return
        rate = accepted / drafted
        self.acceptance = (1 - self.smoothing) * self.acceptance + self.smoothing * rate
        self.k = self._k_for(self.acceptance)

    def reset(self) -> None:
        """A new request: an empty draft context and the initial draft length, so a request's drafts (and
        with them the target's verification batches) do not depend on the requests before it."""
        self.backend.reset()
        self._restart()


def prompt_lookup(max_tokens: int = 8, max_ngram: int = 3) -> LlamaDraftModel:
    """Draft by finding the last ``max_ngram`` tokens earlier in the context and copying what followed."""
    return LlamaPromptLookupDecoding(max_ngram_size=max_ngram, num_pred_tokens=max_tokens)
