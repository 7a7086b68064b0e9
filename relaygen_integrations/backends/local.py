"""The base of backends that hold a model and its KV cache in this process (llama.cpp, transformers).

It implements the engine's protocol (``core/backend.py``) once. The engine says which token sequence
the context should hold; ``sync`` evaluates only the tokens the cache has not seen, after rolling back
to the longest common prefix (a new request, a rejected draft, a cut sentence). Sampling is done in
``core`` from the logits, identically for all backends. ``evaluate_rows`` appends tokens keeping every
position's logits (speculative verification, checking another model's sentence); rolling part of them
back is another ``sync``. Teacher-forced scoring is a separate capability (``scoring.py``).

To add an in-process backend, subclass ``LocalBackend`` and implement its abstract members (about ten
lines each for a library with a KV cache).
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.backend import Step
from ..core.sampling import Sampler
from ..errors import ConfigError, ModelFileError

GGUF_MAGIC = b"GGUF"


def check_local_options(n_ctx: object = None, n_threads: object = None) -> None:
    """What in-process backends take: a positive context size and thread count (None: the default).
    Checked before any file is fetched or loaded; llama.cpp would take 0 silently (its own default)."""
    for name, value in (("n_ctx", n_ctx), ("threads", n_threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def unloadable_gguf(path: Path, why: str) -> ModelFileError:
    """The one error for a model file that exists but does not load."""
    return ModelFileError(f"{path} is not a loadable GGUF model file ({why}); fetch it again (a registry "
                          "model: `relaygen models fetch NAME` verifies it and fetches it anew)")


def check_gguf_header(path: Path) -> None:
    """Fail at once, with a clear line, on a file that is not GGUF at all (llama.cpp only says it failed)."""
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise unloadable_gguf(path, "it does not start with the GGUF signature")


def fingerprint(n_vocab: int, token_text: Callable[[int], bytes]) -> str:
    """A hash of the whole vocabulary; equal fingerprints mean token ids are interchangeable."""
    h = hashlib.sha256(str(n_vocab).encode())
    for i in range(n_vocab):
        h.update(token_text(i) + b"\0")
    return h.hexdigest()


class LocalBackend(ABC):
    name: str = "local"
    concurrency = "single"
    default_max_batch = 1
    local_ids = False

    def __init__(self) -> None:
        self.tokens: list[int] = []  # what the KV cache holds, in order
        self._fingerprint: str | None = None

    # --- what each backend implements -------------------------------------------------------
    @property
    @abstractmethod
    def n_ctx(self) -> int: ...

    @property
    @abstractmethod
    def n_vocab(self) -> int: ...

    @abstractmethod
    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        """Token ids for text; ``special`` parses control tokens like ``<|im_start|>``."""

    @abstractmethod
    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (may be part of a multi-byte character)."""

    @abstractmethod
    def token_text(self, token: int) -> bytes:
        """The vocabulary entry of a token, used to fingerprint the vocabulary."""

    @abstractmethod
    def is_end_of_generation(self, token: int) -> bool: ...

    @abstractmethod
    def chat_prompt(self, messages: list[dict]) -> str:
        """The model's chat template applied to ``messages``, ending where the assistant writes."""

    @abstractmethod
    def _truncate(self, n: int) -> None:
        """Drop everything after the first ``n`` tokens from the KV cache."""

    @abstractmethod
    def _evaluate(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` to the KV cache and make the logits after the last one current."""

    @abstractmethod
    def logits(self) -> np.ndarray:
        """Next-token logits (float32, length n_vocab) after the last evaluated token."""

    def _evaluate_rows(self, tokens: Sequence[int]) -> np.ndarray:
        """Append ``tokens`` to the KV cache and return the logits after each. Backends override this
        with one batched evaluation; this fallback evaluates token by token (``self.tokens`` follows each
        one, as ``logits`` may read it, and is restored: ``evaluate_rows`` records them all)."""
        start, rows = len(self.tokens), []
        for t in tokens:
            self._evaluate([t])
            self.tokens.append(t)
            rows.append(self.logits())
        del self.tokens[start:]
        return np.stack(rows)

    # --- shared behaviour -------------------------------------------------------------------
    @property
    def batch_limit(self) -> int:
        """The most tokens one evaluation call takes (a speculative verification must fit in one)."""
        return self.n_ctx

    def prompt_tokens(self, prompt: str) -> list[int]:
        """Tokenize a chat-templated prompt: control tokens parsed, BOS added if the model wants it."""
        return self.tokenize(prompt.encode("utf-8"), special=True, add_bos=True)

    def sync(self, context: Sequence[int]) -> int:
        """Make the KV cache hold exactly ``context``; evaluate only unseen tokens. Returns how many."""
        if not context:
            raise ValueError("cannot evaluate an empty context")
        keep = self.cached_prefix(context)
        if keep == len(context):
            keep -= 1  # logits for the last position are needed: re-evaluate one token
        self._rollback(keep)
        new = list(context[keep:])
        if new:
            self._evaluate(new)
            self.tokens.extend(new)
        return len(new)

    def _rollback(self, keep: int) -> None:
        if keep < len(self.tokens):
            self._truncate(keep)
            del self.tokens[keep:]

    def check_rows(self, context: Sequence[int], n: int, then: int | None = None) -> tuple[np.ndarray, int]:
        """``context`` in the cache through one call of what it lacks (at least the token before its last
        ``n``), keeping every row: the ``n + 1`` rows that predict its last ``n`` tokens and the next one
        (whatever token ``then`` is to be checked there: a full row has them all)."""
        if not 0 <= n < len(context):
            raise ValueError(f"need 0 <= n < len(context), got n={n}, len={len(context)}")
        keep = min(self.cached_prefix(context), len(context) - n - 1)
        self._rollback(keep)
        rows = self.evaluate_rows(list(context[keep:]))
        return rows[-(n + 1):], len(context) - keep

    def evaluate_rows(self, tokens: Sequence[int]) -> np.ndarray:
        """Append ``tokens`` to the KV cache in one evaluation and return every position's logits
        (row i predicts the token after ``tokens[i]``); the last row becomes ``logits()``."""
        if not tokens:
            raise ValueError("no tokens to evaluate")
        rows = self._evaluate_rows(tokens)
        self.tokens.extend(tokens)
        return rows

    def cached_prefix(self, context: Sequence[int]) -> int:
        """How many leading tokens of ``context`` the KV cache already holds."""
        n = len(self.tokens)
        if len(context) >= n and context[:n] == self.tokens:  # lists compare in C; other sequences take the loop
            return n
        keep = 0
        for a, b in zip(self.tokens, context):
            if a != b:
                break
            keep += 1
        return keep

    def next_token(self, context: Sequence[int], sampler: "Sampler") -> Step:
        """The token that follows ``context``: evaluate what is new, sample from the logits."""
        n = self.sync(context)
        return Step(sampler(self.logits()), calls=(n,) if n else ())

    def pause(self) -> None:
        """The other model takes over: an in-process model keeps its state."""

    def on_gpu(self) -> bool:
        return False

    def can_check(self) -> bool:
        return True

    def check_sampling(self, params) -> None:
        """Any sampling can be checked in process (full rows)."""

    def scorer(self):
        """Itself when it mixes in ``scoring.Scoring``."""
        from .scoring import Scoring

        return self if isinstance(self, Scoring) else None

    def vocab_fingerprint(self) -> str:
        """A hash of the whole vocabulary; equal fingerprints mean token ids are interchangeable."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.n_vocab, self.token_text)
        return self._fingerprint

    def reset(self) -> None:
        """Forget the KV cache (the next request evaluates its whole prompt)."""
        self._truncate(0)
        self.tokens = []

    def close(self) -> None:
        """Free the model; the default does nothing."""
