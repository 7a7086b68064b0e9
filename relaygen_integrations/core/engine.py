"""The relay engine: one pair of models with one KV cache each, serving one request at a time.

``RelayEngine`` holds what every request shares (the two backends, the cue matcher, the resolved check
policy, the settings) as a ``RunSetup`` and checks once that the pair can relay. ``prepare`` makes a
``Request`` (rendered, validated, tokenised once); ``stream`` and ``generate`` run one through the state
machine in ``run.py``. When both vocabularies are identical (checked by fingerprint), tokens are handed
over by id; otherwise the other model's new text is re-tokenised by the receiving model.

``Engine`` is what every entry point types against: ``RelayEngine`` and the serving layer's
``ConcurrentEngine`` both satisfy it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

from ..errors import ConfigError
from .check import CheckPolicy
from .config import RelayConfig
from .events import RelayEvent, RelayResult
from .profile import CueProfile, load_profile
from .chat import ChatRenderer, tokenize_prompt
from .request import Request, check_fits
from .run import RunSetup, _Run
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .backend import Backend

Prompt = "str | Sequence[dict] | Request"

# What both chat templates must render alike for one model to continue the other's text. No system
# message: some templates refuse one (and a pair is about continuing the assistant turn anyway).
_PROBE = [{"role": "user", "content": "U"}]


class Engine(Protocol):
    """A relay engine as entry points use it: one request at a time or many (``max_batch``)."""

    config: RelayConfig
    profile: CueProfile
    check_policy: CheckPolicy

    @property
    def large(self) -> "Backend": ...

    @property
    def small(self) -> "Backend": ...

    @property
    def max_batch(self) -> int: ...

    def prepare(self, prompt: "str | Sequence[dict]", params: SamplingParams | None = None, *,
                chat: bool = True) -> Request: ...

    def stream(self, prompt: Prompt, params: SamplingParams | None = None, *, chat: bool = True) -> Iterator[RelayEvent]: ...

    def generate(self, prompt: Prompt, params: SamplingParams | None = None, *, chat: bool = True) -> RelayResult: ...

    def close(self) -> None: ...


class RelayEngine:
    """Runs RelayGen over a large and a small backend: many requests, one at a time (a second request
    while a stream is still open is refused, never interleaved: both would share the KV caches)."""

    max_batch = 1

    def __init__(self, large: "Backend", small: "Backend", profile: "CueProfile | str | list | None" = None,
                 config: RelayConfig | None = None):
        self.large, self.small = large, small
        self.profile = load_profile(profile)
        self.config = (config or RelayConfig()).validated()
        by_ids = self._check_pair()
        self.check_policy = self._check_policy(by_ids)
        self.setup = RunSetup(large, small, by_ids, self.profile.matcher(), self.check_policy, self.config)
        self._render = ChatRenderer(large)  # the large model's template renders for both (checked alike)
        self._running = threading.Lock()  # held by the one request whose events are being read

    def _check_pair(self) -> bool:
        if self.large is self.small:
            raise ConfigError("large and small must be two backend instances (each keeps its own KV cache)")
        a, b = (_render_probe(m, role) for m, role in ((self.large, "large"), (self.small, "small")))
        if a != b:
            raise ConfigError("the two models use different chat formats, so one cannot continue the "
                              f"other's text (large renders {a!r}, small renders {b!r})")
        same_vocab = self.large.vocab_fingerprint() == self.small.vocab_fingerprint()
        if self.config.handoff == "ids" and not same_vocab:
            raise ConfigError("handoff='ids' needs identical vocabularies, and these differ: use 'text'")
        return same_vocab if self.config.handoff == "auto" else self.config.handoff == "ids"

    def _check_policy(self, by_ids: bool) -> CheckPolicy:
        """The checked relay's policy (off outside relay mode), once the large model can give its rows."""
        from .backend import RowBackend

        auto = self.config.check == "auto"
        policy = self.profile.check_default if auto else CheckPolicy.parse(self.config.check)
        if not policy.active or self.config.mode != "relay":
            return CheckPolicy()
        can_score = isinstance(self.large, RowBackend) and self.large.can_check()
        if auto and not (can_score and by_ids):
            return CheckPolicy()  # the profile's default where the pair can check; an explicit policy fails below
        if not can_score:
            explain = getattr(self.large, "why_no_scoring", None)  # a server backend says which server, and why
            if explain is not None:
                raise ConfigError(explain(f"check={policy}"))
            what = getattr(self.large, "name", type(self.large).__name__)
            raise ConfigError(
                f"check={policy} needs the large model's probability of every small-model token, which the {what} "
                "backend cannot give: speculative decoding is not combined with checking yet; use the llamacpp or "
                "hf backend without speculation")
        if not by_ids:
            raise ConfigError(f"check={policy} needs the two models to share a vocabulary (hand-off by token id)")
        return policy

    @property
    def matcher(self):
        """The cue matcher every request of this engine switches on."""
        return self.setup.matcher

    # --- public API --------------------------------------------------------------------------
    def prepare(self, prompt: "str | Sequence[dict]", params: SamplingParams | None = None, *,
                chat: bool = True) -> Request:
        """The request, rendered, validated and tokenised once; raises now what ``stream`` would reject (bad
        parameters, an empty or over-long prompt) without touching a KV cache. ``chat=False`` sends a string
        prompt as raw text, without the chat template."""
        params = (params or SamplingParams()).validated()
        if self.check_policy.active:
            self.large.check_sampling(params)  # a server draws the large model's tokens from its top choices
        text = self._render(prompt, chat)
        ids: dict[str, list[int] | None] = {}
        for role in self.setup.roles():
            backend: "Backend" = getattr(self, role)
            ids[role] = None if backend.local_ids else tokenize_prompt(backend, text)
            if ids[role] is not None:
                check_fits(ids[role], backend, role)
        return Request(text, params, ids)

    check = prepare  # an entry point that must wait for the engine fails a bad request at once

    def stream(self, prompt: Prompt, params: SamplingParams | None = None, *, chat: bool = True) -> Iterator[RelayEvent]:
        """Yield text deltas tagged with the model that wrote them, switches, and a final result.

        ``prompt``: a prepared ``Request``, or what ``prepare`` takes. A bad request fails here; the engine
        is taken when the first event is read and free again once the stream is read to its end or closed.
        A request that starts meanwhile raises ConfigError instead of sharing the caches.
        """
        request = prompt if isinstance(prompt, Request) else self.prepare(prompt, params, chat=chat)
        return self._guarded(_Run(self.setup, request).events())

    def generate(self, prompt: Prompt, params: SamplingParams | None = None, *, chat: bool = True) -> RelayResult:
        """Run to completion and return the text, its per-model segments and the stats."""
        return final_result(self.stream(prompt, params, chat=chat))

    def _guarded(self, events: Iterator[RelayEvent]) -> Iterator[RelayEvent]:
        if not self._running.acquire(blocking=False):
            raise ConfigError("this engine is already running a request (a stream of it is still open): read "
                              "that stream to its end or close() it first; an engine serves one request at a time")
        try:
            yield from events
        finally:
            self._running.release()

    def close(self) -> None:
        """Free both models."""
        self.large.close()
        self.small.close()


def final_result(events: Iterator[RelayEvent]) -> RelayResult:
    """The result a stream ends with (the stream is read to its end)."""
    for event in events:
        if event.kind == "done":
            return event.result
    raise RuntimeError("relay stream ended without a result")  # pragma: no cover


def _render_probe(backend: "Backend", role: str) -> str:
    try:
        return backend.chat_prompt(_PROBE)
    except ConfigError:
        raise
    except Exception as e:  # a Jinja template that raises, or cannot render a plain user turn
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"the {role} model's chat template cannot render a user message ({first[:200]}); "
                          "pass chat_format='raw' (or another template) for that model") from None
