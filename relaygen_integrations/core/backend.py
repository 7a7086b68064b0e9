"""What the relay engine needs from a model: the seam between ``core`` and ``backends``.

The engine types against this Protocol only, and every member is used by it. ``backends/local.py``
implements it once for in-process models with their own KV cache (llama.cpp, transformers);
``backends/openai.py`` implements it over HTTP; ``speculative/decoder.py`` wraps any local backend
in it. A backend is per model *and* per sequence: it holds one KV cache, so two concurrent requests
need two backends (``TransformersBackend.sharing_weights`` gives one over the same weights).

Metering is returned, never scraped: each ``next_token`` says what it cost in a ``Step``, and the
engine adds the steps up (``ModelStats.add``).

Capabilities are declared by the backend, never guessed from its name: how it serves concurrent
requests (``concurrency``, ``default_max_batch``: class attributes, known before a model loads), whether
its token ids live only in it (``local_ids``), whether it runs on a GPU and what scores text for it
(``on_gpu()``, ``scorer()``: asked of a loaded instance). A wrapper answers for what it wraps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, Sequence, runtime_checkable

from .sampling import Sampler

if TYPE_CHECKING:
    import numpy as np

    from .check import Scores
    from .sampling import SamplingParams


@dataclass(frozen=True, slots=True)
class Step:
    """One sampled token and what producing it cost."""

    token: int
    calls: tuple[int, ...] = ()  # sizes (tokens) of the evaluation calls made, in order
    row_calls: tuple[int, ...] = ()  # sizes of those calls that kept every position's logits
    drafted: int = 0  # speculative decoding: tokens a drafter proposed ...
    accepted: int = 0  # ... and those the target's sampler confirmed
    draft_calls: tuple[int, ...] = ()  # the draft model's own evaluation calls
    requests: int = 0  # server backends: completion streams opened

    @property
    def evaluated(self) -> int:
        return sum(self.calls)


Concurrency = Literal["batched", "independent", "single"]


@runtime_checkable
class Backend(Protocol):
    """One model with one context, as the engine drives it."""

    name: str
    # "batched": one model evaluates many requests' sequences in one call (llama.cpp); "independent": each
    # request gets backends of its own and the model batches on its side (servers); "single": one at a time
    concurrency: ClassVar[Concurrency]
    default_max_batch: ClassVar[int]  # requests served at once unless the user says otherwise
    # token ids that mean something only to this instance, for one request (a server's streamed text): the
    # prompt is tokenised where the request runs, after ``reset``
    local_ids: bool

    def on_gpu(self) -> bool:
        """Whether the model runs on a GPU (where speculative decoding pays)."""

    def scorer(self) -> object | None:
        """What scores text for this model (``backends.scoring.Scoring``), or None when it cannot."""

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

    def next_token(self, context: Sequence[int], sampler: Sampler) -> Step:
        """Bring the context to ``context`` (evaluating only what is new) and sample the next token."""

    def pause(self) -> None:
        """Another model writes now (a server closes its stream)."""

    def reset(self) -> None:
        """A new request begins."""

    def close(self) -> None: ...


@runtime_checkable
class RowBackend(Backend, Protocol):
    """A backend that can score text it did not write (in-process ones keep every row; a server backend
    with a scoring server returns its top choices): what a checked relay asks of its large model."""

    def check_rows(self, context: Sequence[int], n: int, then: int | None = None) -> "tuple[np.ndarray | Scores, int]":
        """Bring the cache to ``context`` in one call; the rows predicting its last ``n`` tokens and the
        token after them (``n + 1`` rows; ``then``: a token to be checked at that last row), and how many
        tokens the call evaluated. In process: logit rows; a server: ``check.Scores`` from its top choices."""

    def can_check(self) -> bool:
        """Whether ``check_rows`` works here (a server backend: where its server scores)."""

    def check_sampling(self, params: "SamplingParams") -> None:
        """Raise ConfigError if the check cannot draw the large model's tokens exactly with ``params``."""
