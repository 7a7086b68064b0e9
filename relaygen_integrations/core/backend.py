"""What the relay engine needs from a model: the seam between ``core`` and ``backends``.

The engine types against this Protocol only. ``backends/base.py`` is one implementation of it for
in-process models with their own KV cache (llama.cpp, transformers); the server backend implements the
same members over HTTP. Metering is still read from counters around ``next_token`` (the engine adds up
their differences); a step that returns what it cost is the next cut of this seam.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from .sampling import Sampler


@runtime_checkable
class Backend(Protocol):
    """One model with one context, as the engine drives it."""

    evaluated_tokens: int  # tokens evaluated so far, never counting a cached token twice
    eval_calls: int  # evaluation calls so far
    drafted_tokens: int  # speculative decoding: tokens a drafter proposed ...
    accepted_draft_tokens: int  # ... and those the target's sampler confirmed

    @property
    def n_ctx(self) -> int: ...

    def chat_prompt(self, messages: list[dict]) -> str:
        """The model's chat template, rendered for a new assistant turn."""

    def prompt_tokens(self, prompt: str) -> list[int]:
        """A rendered prompt as this model's tokens (special tokens parsed)."""

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    def is_end_of_generation(self, token: int) -> bool: ...

    def vocab_fingerprint(self) -> str:
        """Equal fingerprints: token ids mean the same in both models (hand-off by id)."""

    def cached_prefix(self, context: Sequence[int]) -> int:
        """How much of ``context`` the model's cache already holds."""

    def next_token(self, context: Sequence[int], sampler: Sampler) -> int:
        """Bring the context to ``context`` (evaluating only what is new) and sample the next token."""

    def pause(self) -> None:
        """Another model writes now (a server closes its stream)."""

    def reset(self) -> None:
        """A new request begins."""

    def close(self) -> None: ...
