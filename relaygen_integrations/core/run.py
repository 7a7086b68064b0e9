"""One request through the relay: the state machine of method.md over (pair setup, request, transcript).

States: the large model reasons; when its fresh text completes a switch cue (and it has written at least
``min_large_tokens`` since it took control) the small model continues until the first sentence end, then
the large model resumes. The reasoning-end marker starts the answer stage, written by the small model by
default. ``max_tokens`` counts every generated token of both models. With a check policy the large model
vets each small sentence when it takes control back (``checking.py``) and the run rolls back to a cut;
with ``resume`` the small model takes the sentence back after the large model's token at the cut.
``RelayEngine`` (engine.py) holds what every request shares, as a ``RunSetup``; a ``_Run`` is never reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

from .check import CheckPolicy
from .checking import ContextFull, SentenceCheck
from .config import RelayConfig
from .events import ModelStats, RelayEvent, RelayResult, RelayStats, Role
from .participant import Participant
from .chat import tokenize_prompt
from .request import Request, check_fits
from .sampling import Sampler
from .sentences import ends_on_open_mark, find_sentence_end
from .transcript import Piece, Transcript

if TYPE_CHECKING:
    from .backend import Backend
    from .cues import CueMatcher


@dataclass(frozen=True)
class RunSetup:
    """What every request of one engine shares: the pair, how it hands over, cues, check policy, settings."""

    large: "Backend"
    small: "Backend"
    by_ids: bool  # identical vocabularies: hand-offs go by token id, else by re-tokenised text
    matcher: "CueMatcher"
    policy: CheckPolicy  # resolved: never "auto"
    config: RelayConfig

    def roles(self) -> tuple[str, ...]:
        """The models that take part in a request."""
        return {"large": ("large",), "small": ("small",)}.get(self.config.mode, ("large", "small"))


class _Run:
    """One request: the state machine plus its bookkeeping. Not reused."""

    def __init__(self, setup: RunSetup, request: Request):
        self.setup, self.cfg, self.request, self.params = setup, setup.config, request, request.params
        self.stats = RelayStats(handoff="ids" if setup.by_ids else "text", check=str(setup.policy))
        self.parts: dict[str, Participant] = {}
        self.sampler = Sampler(self.params)
        # Checking, the small model draws from random numbers of its own, so the large model's draws (and with
        # `exact` its output) are those of the large model alone; unchecked, both share one stream as before.
        seed = (self.params.seed * 1_000_003 + 7) % 2**32
        self.small_sampler = Sampler(replace(self.params, seed=seed)) if setup.policy.active else self.sampler
        self.checker = SentenceCheck(setup.policy, self.sampler, self.stats, self.cfg.resume)
        self.out = Transcript(self.params.stop, self.cfg.reasoning_end)
        self.last_role: str | None = None  # the model that sampled last
        self.generated = 0  # tokens in the output, both models
        self.active: str = "small" if self.cfg.mode == "small" else "large"
        self.large_run = 0  # tokens the large model has written since it last took control
        self.awaiting_boundary = False  # the small segment ends on ".", "!" or "?": the next token decides
        self.segment_start = 0  # where the current small segment's text starts

    # --- steps ---------------------------------------------------------------------------------
    def _start(self) -> None:
        """Take the engine's two KV caches for this request (not before its first event is asked for)."""
        for backend in (self.setup.large, self.setup.small):
            if not self.cfg.reuse_prompt_cache:
                backend.reset()
        for role in self.setup.roles():
            backend: "Backend" = getattr(self.setup, role)
            ids = self.request.prompt_ids[role]
            if ids is None:  # a backend whose ids live in it, for one request: tokenised here, once
                ids = tokenize_prompt(backend, self.request.prompt)
                check_fits(ids, backend, role)
            st: ModelStats = getattr(self.stats, role)
            st.prompt_tokens = len(ids)
            self.parts[role] = Participant(role, backend, ids, st)

    def _step(self, role: str) -> int:
        """Catch the model up, sample one token. Its time and the step's cost go to the model's stats."""
        self.request.raise_if_cancelled()
        p = self.parts[role]
        if self.last_role not in (None, role):
            self.parts[self.last_role].backend.pause()  # a server stops generating for the idle model
        self.last_role = role
        decided = self.checker.pending_token(len(self.out)) if role == "large" else None
        if decided is not None:  # the last check already gave the large model's token
            return decided
        t0 = time.perf_counter()
        p.catch_up(self.out.pieces, self.setup.by_ids)
        if len(p.context) >= p.backend.n_ctx:
            raise ContextFull
        b = p.backend
        if p.first_step:  # what the KV cache holds from the previous request (speculation-proof)
            p.stats.cached_prompt_tokens = min(p.stats.prompt_tokens, b.cached_prefix(p.context))
            p.first_step = False
        step = b.next_token(p.context, self.small_sampler if role == "small" else self.sampler)
        p.stats.add(step)
        if step.draft_calls:
            self.stats.draft.add_calls(step.draft_calls)
        p.stats.seconds += time.perf_counter() - t0
        return step.token

    def _append(self, role: Role, token: int | None, data: bytes) -> None:
        self.out.append(Piece(role, token, data, self.out.stage))
        if role in self.parts and token is not None:
            self.parts[role].wrote(token, len(self.out))

    def _force(self, text: str) -> None:
        """Insert engine text (the reasoning-end marker) as if written by the large model's tokenizer."""
        s = self.setup
        tokenizer = s.large if s.by_ids or "large" in self.parts else s.small
        ids = tokenizer.tokenize(text.encode("utf-8"), special=True) if s.by_ids else [None]
        if s.by_ids:
            for t in ids:
                self._append("forced", t, tokenizer.token_bytes(t))
        else:
            self._append("forced", None, text.encode("utf-8"))
        self.stats.forced_tokens += len(ids)

    def _check(self, end_token: int | None = None) -> bool:
        """Check the open sentence; on a cut roll everything back to it and return True."""
        cut = self.checker.check(self.parts["large"], self.out, end_token)
        if cut is None:
            return False
        removed = self.out.rollback(cut.keep)
        for piece in removed:
            if piece.role in ("large", "small"):
                getattr(self.stats, piece.role).generated_tokens -= 1
        self.generated -= len(removed)
        for part in self.parts.values():
            part.rollback(cut.keep)
        return True

    def _hand_back(self) -> RelayEvent:
        """The large model takes control."""
        self.active, self.large_run, self.awaiting_boundary = "large", 0, False
        return RelayEvent("switch", "large", self.out.stage)

    def _resume(self, before: int) -> RelayEvent | None:
        """After a cut, the large model's token is written: the small model takes the sentence back, unless
        that token ended it (or no resumption is left). ``before``: where the token's text starts."""
        out = self.out
        if self.active != "large" or not self.checker.resume_due(len(out)):
            return None
        ended = out.stage == "reasoning" and find_sentence_end(out.text, max(0, before - 1)) is not None
        if not self.checker.take_resumption(not ended):
            return None
        self.active, self.segment_start = "small", before
        self.awaiting_boundary = out.stage == "reasoning" and ends_on_open_mark(out.text)
        self.checker.begin(out, resumed=True)
        return RelayEvent("switch", "small", out.stage)

    def _open_answer(self) -> None:
        """A small-model answer in a relay is one more sentence to check."""
        if self.active == "small" and self.cfg.mode == "relay":
            self.checker.begin(self.out)

    def _flush(self, final: bool) -> Iterator[RelayEvent]:
        for model, stage, text in self.out.flush(final, self.checker.visible):
            yield RelayEvent("text", model, stage, text)

    # --- the state machine --------------------------------------------------------------------
    def events(self) -> Iterator[RelayEvent]:
        self._start()
        start = time.perf_counter()
        finish = ""
        try:
            finish = yield from self._loop()
        except ContextFull:
            finish = "context"
        finally:  # also when the caller stops reading the stream
            for part in self.parts.values():
                part.backend.pause()
        self.out.close()
        yield from self._flush(final=True)
        self.stats.finish_reason = finish
        self.stats.wall_seconds = time.perf_counter() - start
        out = self.out
        yield RelayEvent("done", result=RelayResult(out.text, out.segments, self.stats, reasoning=out.reasoning,
                                                    answer=out.answer, seed=self.params.seed))

    def _loop(self):
        """The relay until it finishes; returns the finish reason."""
        cfg, out, check, budget = self.cfg, self.out, self.checker, self.params.max_tokens
        answer_model = cfg.answer_model if cfg.mode == "relay" else self.active
        reasoning_limit = budget - cfg.answer_reserve_tokens
        while True:
            # The reasoning ran out of its budget: the marker opens the answer stage, only if that stage has
            # tokens left to write after it (a truncated answer holds only what the models wrote).
            at_limit = out.stage == "reasoning" and cfg.reasoning_end and reasoning_limit <= self.generated < budget
            if (at_limit or self.generated >= budget) and check.open and self._check():
                yield self._hand_back()  # the cut gave the budget room again
                continue
            if at_limit:
                self._force(cfg.reasoning_end)
                out.found_marker()
                if self.active != answer_model:
                    yield RelayEvent("switch", answer_model, "answer")
                self.active = answer_model
                self._open_answer()
            if self.generated >= budget:
                return "length"
            token = self._step(self.active)
            backend = self.parts[self.active].backend
            eog = backend.is_end_of_generation(token)
            data = b"" if eog else backend.token_bytes(token)
            in_segment = self.active == "small" and cfg.mode == "relay" and out.stage == "reasoning"
            boundary = self.awaiting_boundary and (eog or data[:1].isspace())
            if in_segment and (boundary or eog):
                # The mark ended the sentence (this look-ahead token is not kept), or the small model wants
                # to stop: either way the large model decides what comes next.
                self.stats.boundary_tokens_discarded += boundary
                if check.open:
                    self._check()
                yield self._hand_back()
                continue
            if eog:  # the small model's answer is checked with its end (a rejected end is a cut)
                if check.open and self._check(end_token=token):
                    yield self._hand_back()
                    continue
                return "stop"
            before = len(out.text)
            self._append(self.active, token, data)
            getattr(self.stats, self.active).generated_tokens += 1
            self.generated += 1
            cut = out.stop_hit(before) if self.params.stop else None
            if cut is not None and check.open and self._check():
                yield self._hand_back()  # the cut took the stop string away
                continue
            if cut is not None:
                out.truncate_text(cut)
                return "stop_string"
            yield from self._flush(final=False)
            if out.found_marker():
                if check.open and self._check():
                    yield self._hand_back()  # the cut took the marker away
                    continue
                if self.active != answer_model:
                    self.active = answer_model
                    yield RelayEvent("switch", answer_model, "answer")
                self._open_answer()
                continue
            resumed = self._resume(before)
            if resumed is not None:
                yield resumed
                continue
            if cfg.mode != "relay" or out.stage != "reasoning":
                continue
            if self.active == "large":
                self.large_run += 1
                hit = self.setup.matcher.fired(out.text, before) if self.large_run >= cfg.min_large_tokens else None
                if hit is not None:
                    self.stats.switches += 1
                    self.stats.cues_fired[hit.cue] = self.stats.cues_fired.get(hit.cue, 0) + 1
                    self.active, self.segment_start, self.awaiting_boundary = "small", len(out.text), False
                    check.begin(out, hit.cue)
                    yield RelayEvent("switch", "small", out.stage, cue=hit.cue)
            elif find_sentence_end(out.text, max(self.segment_start, before - 1)) is not None:
                if check.open:  # only the new text (and the character before it) can complete a sentence end
                    self._check()
                yield self._hand_back()
            else:
                self.awaiting_boundary = len(out.text) > self.segment_start and ends_on_open_mark(out.text)
