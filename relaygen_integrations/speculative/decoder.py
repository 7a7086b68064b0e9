"""Speculative decoding as a wrapper: ``SpeculativeBackend(target, drafter)`` is a backend like any other.

It works over any in-process backend (llama.cpp, transformers): it needs the target's ``sync``,
``logits`` and ``evaluate_rows``, nothing library-specific. Each time the engine asks for a token it
does not have yet, the drafter proposes a few, the target evaluates them in one batch keeping every
row, and ``verify_draft`` accepts a prefix (sample-and-match: exact for any sampler). The accepted
tokens are handed out one per call while the engine keeps extending the same context; a context that
leaves the plan (a hand-off, a new request) drafts again from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..core.backend import Step
from ..core.sampling import Sampler
from ..errors import ConfigError
from .draft import Drafter, ModelDrafter
from .verify import verify_draft

if TYPE_CHECKING:
    from ..backends.local import LocalBackend


class SpeculativeBackend:
    """The target model, decoded speculatively with ``drafter`` (a ``DraftModel`` or prompt lookup).
    A draft model must share the target's vocabulary (its token ids are verified as the target's) and
    have a backend of its own. ``close`` closes the draft model and the target (a benchmark that shares
    one target between methods closes its backends itself instead)."""

    def __init__(self, target: "LocalBackend", drafter: Drafter):
        if isinstance(drafter, ModelDrafter):
            if drafter.backend is target:
                raise ConfigError("a draft model needs its own backend (its own KV cache), not the target's")
            if drafter.backend.vocab_fingerprint() != target.vocab_fingerprint():
                raise ConfigError("the draft model's vocabulary differs from the target's: its tokens cannot be verified")
        self.target, self.drafter = target, drafter
        self.name = f"{target.name}+speculative"
        self._plan: list[int] = []  # context + tokens already verified, not yet handed out

    # --- the protocol, as the target ---------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.target.n_ctx

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.target.chat_prompt(messages)

    def prompt_tokens(self, prompt: str) -> list[int]:
        return self.target.prompt_tokens(prompt)

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        return self.target.tokenize(text, special=special, add_bos=add_bos)

    def token_bytes(self, token: int) -> bytes:
        return self.target.token_bytes(token)

    def is_end_of_generation(self, token: int) -> bool:
        return self.target.is_end_of_generation(token)

    def vocab_fingerprint(self) -> str:
        return self.target.vocab_fingerprint()

    def cached_prefix(self, context: Sequence[int]) -> int:
        return self.target.cached_prefix(context)

    def pause(self) -> None:
        self.target.pause()

    # --- capabilities: the target's (speculation is not combined with batched requests yet) ----------
    concurrency = "single"
    default_max_batch = 1
    local_ids = False

    def on_gpu(self) -> bool:
        return self.target.on_gpu()

    def scorer(self):
        return self.target.scorer()

    # --- speculation -------------------------------------------------------------------------
    def next_token(self, context: Sequence[int], sampler: Sampler) -> Step:
        """A verified token of the current plan (no evaluation), or a new draft verified in one batch."""
        n = len(context)
        if n < len(self._plan) and self._plan[:n] == context:
            return Step(self._plan[n])
        target = self.target
        caught_up = target.sync(context)
        calls = (caught_up,) if caught_up else ()
        room = min(target.n_ctx - n - 1, target.batch_limit - 1)  # verification is one batch
        if isinstance(self.drafter, ModelDrafter):
            draft, draft_calls = self.drafter.draft(list(context))
        else:
            draft, draft_calls = [int(t) for t in self.drafter(np.asarray(context, dtype=np.intc))], ()
        draft = draft[: max(0, room)]
        if not draft:
            self._plan = []
            return Step(sampler(target.logits()), calls=calls, draft_calls=draft_calls)
        rows = np.vstack([target.logits()[None, :], target.evaluate_rows(draft)])
        accepted = verify_draft(sampler, rows, draft)
        if isinstance(self.drafter, ModelDrafter):
            self.drafter.feedback(len(draft), len(accepted) - 1)
        self._plan = list(context) + accepted
        return Step(accepted[0], calls=calls + (len(draft),), row_calls=(len(draft),), drafted=len(draft),
                    accepted=len(accepted) - 1, draft_calls=draft_calls)

    def reset(self) -> None:
        """A new request: the target's cache, the plan and the drafter's state all start afresh (so a
        request drafts, and verifies in the same batches, whatever ran before it)."""
        self.target.reset()
        self._plan = []
        if isinstance(self.drafter, ModelDrafter):
            self.drafter.reset()

    def close(self) -> None:
        if isinstance(self.drafter, ModelDrafter):
            self.drafter.close()
        self.target.close()
