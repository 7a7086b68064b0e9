"""One request through the relay: the state machine of method.md, its output bookkeeping and its stats.

``RelayEngine`` (engine.py) holds what is shared by every request (the two backends, the cue matcher, the
configuration); everything that belongs to one request lives here, in a ``_Run`` that is never reused.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from ..errors import ConfigError
from .events import ModelStats, RelayEvent, RelayResult, RelayStats, Role, Segment
from .checking import CheckedRun, ContextFull
from .sampling import Sampler, SamplingParams
from .sentences import ends_on_open_mark, find_sentence_end

if TYPE_CHECKING:
    from .backend import Backend
    from .engine import RelayEngine


@dataclass
class _Piece:
    """One unit of output: a token written by a model, or text the engine inserted."""

    role: Role
    token: int | None  # None for engine-inserted text in text hand-off mode
    data: bytes
    stage: str = "reasoning"


class _Participant:
    """One model in a run: its backend, its token context, and how far it has caught up."""

    def __init__(self, role: Role, backend: "Backend", prompt_ids: list[int], stats: ModelStats):
        self.role, self.backend, self.stats = role, backend, stats
        self.context = list(prompt_ids)
        self.synced = 0  # number of output pieces already in self.context
        self.first_step = True

    def catch_up(self, pieces: list[_Piece], by_ids: bool) -> None:
        new = pieces[self.synced:]
        self.synced = len(pieces)
        if by_ids:
            for p in new:
                self.context.append(p.token)
                self.stats.handoff_tokens += p.role != self.role
            return
        foreign = b""
        for p in new + [None]:
            if p is not None and p.role != self.role:
                foreign += p.data
                continue
            if foreign:
                ids = self.backend.tokenize(foreign)
                self.context += ids
                self.stats.handoff_tokens += len(ids)
                foreign = b""
            if p is not None:
                self.context.append(p.token)


class _Run(CheckedRun):
    """One request: the state machine plus its bookkeeping. Not reused."""

    def __init__(self, engine: "RelayEngine", prompt_text: str, params: SamplingParams):
        self.e, self.cfg, self.params = engine, engine.config, params
        self.prompt_text = prompt_text
        engine._prompt_ids(prompt_text)  # a bad prompt fails here, when stream() is called
        self.stats = RelayStats(handoff="ids" if engine._by_ids else "text", check=str(engine.check_policy))
        self.parts: dict[str, _Participant] = {}
        self.sampler = Sampler(params)
        self.pieces: list[_Piece] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""  # decoded output so far
        self.segments: list[Segment] = []
        self.uncounted: dict[str, int] = {}  # tokens per model that have no text (so no segment) yet
        self.stage = "reasoning"
        self.answer_start: int | None = None
        self.marker_scan = 0
        self.emitted = 0  # characters of self.text already streamed
        self.holdback = max((len(s) for s in params.stop), default=1) - 1
        self.last_role: str | None = None  # the model that sampled last
        self.generated = 0  # tokens in the output, both models
        self._init_checking(engine.check_policy)

    # --- helpers -----------------------------------------------------------------------------
    def _step(self, role: str) -> int:
        """Catch the model up, sample one token. Its time and the step's cost go to the model's stats."""
        p = self.parts[role]
        if self.last_role not in (None, role):
            self.parts[self.last_role].backend.pause()  # a server stops generating for the idle model
        self.last_role = role
        decided = self._pending_token() if role == "large" else None
        if decided is not None:  # the last check already gave the large model's token
            return decided
        t0 = time.perf_counter()
        p.catch_up(self.pieces, self.e._by_ids)
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

    def _append(self, role: Role, token: int | None, data: bytes) -> str:
        """Add output; return the newly decodable text (whole characters only)."""
        delta = self._record(_Piece(role, token, data, self.stage))
        if role in self.parts and token is not None:
            part = self.parts[role]
            part.context.append(token)
            part.synced = len(self.pieces)
        return delta

    def _record(self, piece: _Piece) -> str:
        """The piece in the output: its text, its segment, its token count."""
        self.pieces.append(piece)
        role = piece.role
        delta = self.decoder.decode(piece.data)
        self.text += delta
        if delta:
            if not self.segments or self.segments[-1].model != role or self.segments[-1].stage != self.stage:
                self.segments.append(Segment(role, self.stage))
            self.segments[-1].text += delta
        if self.segments and self.segments[-1].model == role:
            self.segments[-1].tokens += 1 + (self.uncounted.pop(role, 0) if self.uncounted else 0)
        else:  # no text yet (a character still incomplete): counted with the segment its text opens
            self.uncounted[role] = self.uncounted.get(role, 0) + 1
        return delta

    def _count_leftover_tokens(self) -> None:
        """Tokens whose text never came (a character completed by the other model, or cut by the budget)
        go to their model's last segment, so the segments account for every token written."""
        for role, n in self.uncounted.items():
            mine = [seg for seg in self.segments if seg.model == role]
            if mine:
                mine[-1].tokens += n
            else:
                self.segments.append(Segment(role, self.stage, tokens=n))
        self.uncounted.clear()

    def _force(self, text: str) -> None:
        """Insert engine text (the reasoning-end marker) as if written by the large model's tokenizer."""
        tokenizer = self.e.large if self.e._by_ids or "large" in self.parts else self.e.small
        ids = tokenizer.tokenize(text.encode("utf-8"), special=True) if self.e._by_ids else [None]
        if self.e._by_ids:
            for t in ids:
                self._append("forced", t, tokenizer.token_bytes(t))
        else:
            self._append("forced", None, text.encode("utf-8"))
        self.stats.forced_tokens += len(ids)

    def _stop_hit(self, from_char: int) -> int | None:
        hits = [i for s in self.params.stop if (i := self.text.find(s, max(0, from_char - len(s)))) >= 0]
        return min(hits) if hits else None

    def _flush(self, final: bool) -> Iterator[RelayEvent]:
        """Stream text that can no longer become part of a stop string, segment by segment."""
        limit = len(self.text) if final else len(self.text) - self.holdback
        if self.unchecked is not None and not final:
            limit = min(limit, self.unchecked[1])  # a sentence the large model has not accepted yet
        pos = 0
        for seg in self.segments:
            start, end = pos, pos + len(seg.text)
            pos = end
            lo, hi = max(start, self.emitted), min(end, limit)
            if hi > lo:
                yield RelayEvent("text", seg.model, seg.stage, self.text[lo:hi])
                self.emitted = hi

    def _open_answer(self, active: str) -> None:
        """A small-model answer in a relay is one more sentence to check."""
        if active == "small" and self.cfg.mode == "relay":
            self._open_sentence()

    def _check_marker(self) -> bool:
        marker = self.cfg.reasoning_end
        if marker is None or self.stage != "reasoning":
            return False
        i = self.text.find(marker, max(0, self.marker_scan - len(marker)))
        self.marker_scan = len(self.text)
        if i < 0:
            return False
        self.stage = "answer"
        self.answer_start = i + len(marker)
        return True

    def _start(self) -> None:
        """Take the engine's two KV caches for this request (not before its first event is asked for)."""
        for backend in (self.e.large, self.e.small):
            if not self.cfg.reuse_prompt_cache:
                backend.reset()  # before tokenising: a server backend's local ids live for one request
        for role, ids in self.e._prompt_ids(self.prompt_text).items():
            st: ModelStats = getattr(self.stats, role)
            st.prompt_tokens = len(ids)
            self.parts[role] = _Participant(role, getattr(self.e, role), ids, st)

    # --- the state machine --------------------------------------------------------------------
    def events(self) -> Iterator[RelayEvent]:
        if not self.e._running.acquire(blocking=False):
            raise ConfigError("this engine is already running a request (a stream of it is still open): read "
                              "that stream to its end or close() it first; an engine serves one request at a time")
        try:
            self._start()
            yield from self._events()
        finally:
            self.e._running.release()

    def _events(self) -> Iterator[RelayEvent]:
        start = time.perf_counter()
        cfg = self.cfg
        active: str = "small" if cfg.mode == "small" else "large"
        answer_model = cfg.answer_model if cfg.mode == "relay" else active
        large_run = 0  # tokens the large model has written since it last took control
        segment_start = 0  # where the current small segment's text starts
        awaiting_boundary = False  # the small segment ends on ".", "!" or "?": next token decides
        reasoning_limit = self.params.max_tokens - cfg.answer_reserve_tokens
        finish = ""
        try:
            while True:
                at_limit = self.stage == "reasoning" and cfg.reasoning_end and self.generated >= reasoning_limit
                if (at_limit or self.generated >= self.params.max_tokens) and self.unchecked is not None:
                    if self._check_segment():  # cut: the budget has room again
                        active, large_run, awaiting_boundary = "large", 0, False
                        yield RelayEvent("switch", "large", self.stage)
                        continue
                if at_limit:
                    self._force(cfg.reasoning_end)
                    self._check_marker()
                    if active != answer_model:
                        yield RelayEvent("switch", answer_model, "answer")
                    active = answer_model
                    self._open_answer(active)
                if self.generated >= self.params.max_tokens:
                    finish = "length"
                    break
                token = self._step(active)
                backend = self.parts[active].backend
                eog = backend.is_end_of_generation(token)
                data = b"" if eog else backend.token_bytes(token)
                in_segment = active == "small" and cfg.mode == "relay" and self.stage == "reasoning"
                if in_segment and awaiting_boundary and (eog or data[:1].isspace()):
                    # The mark ended the sentence; this look-ahead token is not kept.
                    self.stats.boundary_tokens_discarded += 1
                    if self.unchecked is not None:
                        self._check_segment()
                    active, large_run, awaiting_boundary = "large", 0, False
                    yield RelayEvent("switch", "large", self.stage)
                    continue
                if eog:
                    if in_segment:  # the small model wants to stop: the large model decides
                        if self.unchecked is not None:
                            self._check_segment()
                        active, large_run = "large", 0
                        yield RelayEvent("switch", "large", self.stage)
                        continue
                    if self.unchecked is not None and self._check_segment(end_token=token):
                        active = "large"  # the large model did not accept the small model's answer as it ends
                        yield RelayEvent("switch", "large", self.stage)
                        continue
                    finish = "stop"
                    break
                before = len(self.text)
                self._append(active, token, data)
                getattr(self.stats, active).generated_tokens += 1
                self.generated += 1
                cut = self._stop_hit(before) if self.params.stop else None
                if cut is not None and self.unchecked is not None and self._check_segment():
                    active, large_run, awaiting_boundary = "large", 0, False  # the cut took the stop string away
                    yield RelayEvent("switch", "large", self.stage)
                    continue
                if cut is not None:
                    self._truncate_text(cut)
                    finish = "stop_string"
                    break
                yield from self._flush(final=False)
                if self._check_marker():
                    if self.unchecked is not None and self._check_segment():  # the cut took the marker away
                        active, large_run, awaiting_boundary = "large", 0, False
                        yield RelayEvent("switch", "large", self.stage)
                        continue
                    if active != answer_model:
                        active = answer_model
                        yield RelayEvent("switch", answer_model, "answer")
                    self._open_answer(active)
                    continue
                if cfg.mode != "relay" or self.stage != "reasoning":
                    continue
                if active == "large":
                    large_run += 1
                    if large_run >= cfg.min_large_tokens:
                        hit = self.e.matcher.fired(self.text, before)
                        if hit is not None:
                            self.stats.switches += 1
                            self.stats.cues_fired[hit.cue] = self.stats.cues_fired.get(hit.cue, 0) + 1
                            active, segment_start, awaiting_boundary = "small", len(self.text), False
                            self._open_sentence()
                            yield RelayEvent("switch", "small", self.stage, cue=hit.cue)
                else:  # only the new text (and the character before it) can complete a sentence end
                    if find_sentence_end(self.text, max(segment_start, before - 1)) is not None:
                        if self.unchecked is not None:
                            self._check_segment()
                        active, large_run, awaiting_boundary = "large", 0, False
                        yield RelayEvent("switch", "large", self.stage)
                    else:
                        awaiting_boundary = len(self.text) > segment_start and ends_on_open_mark(self.text)
        except ContextFull:
            finish = "context"
        finally:  # also when the caller stops reading the stream
            for part in self.parts.values():
                part.backend.pause()
        # Bytes of a character that never completed (the budget ran out inside it) are dropped:
        # the output must never contain a broken character.
        self.decoder.reset()
        self._count_leftover_tokens()
        yield from self._flush(final=True)
        self.stats.finish_reason = finish
        self.stats.wall_seconds = time.perf_counter() - start
        split = self.answer_start if self.answer_start is not None else len(self.text)
        result = RelayResult(self.text, self.segments, self.stats, reasoning=self.text[:split],
                             answer=self.text[split:] if self.answer_start is not None else "",
                             seed=self.params.seed)
        yield RelayEvent("done", result=result)

    def _truncate_text(self, cut: int) -> None:
        self.text = self.text[:cut]
        pos, kept = 0, []
        for seg in self.segments:
            if pos >= cut:
                break
            seg.text = seg.text[: cut - pos]
            pos += len(seg.text)
            kept.append(seg)
        self.segments = kept
