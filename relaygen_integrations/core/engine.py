"""The relay engine: the runtime state machine of method.md over two backends.

States: the large model reasons; when its fresh text completes a switch cue (and it has written at
least ``min_large_tokens`` since it took control) the small model continues until the first sentence
end, then the large model resumes. The reasoning-end marker starts the answer stage, written by the
small model by default. ``max_tokens`` counts every generated token of both models.

Each backend keeps its own KV cache. A participant's context is its prompt plus the output tokens
it has caught up on; before a model writes, it evaluates only what the other model wrote since it
last ran. When both vocabularies are identical (checked by fingerprint), tokens are handed over by
id; otherwise the other model's new text is re-tokenised by the receiving model.
"""

from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from ..errors import ConfigError, ContextWindowError
from .config import RelayConfig
from .events import ModelStats, RelayEvent, RelayResult, RelayStats, Role, Segment
from .profile import CueProfile, load_profile
from .sampling import Sampler, SamplingParams
from .sentences import ends_on_open_mark, find_sentence_end

if TYPE_CHECKING:
    from .backend import Backend

# What both chat templates must render alike for one model to continue the other's text. No system
# message: some templates refuse one (and a pair is about continuing the assistant turn anyway).
_PROBE = [{"role": "user", "content": "U"}]


@dataclass
class _Piece:
    """One unit of output: a token written by a model, or text the engine inserted."""

    role: Role
    token: int | None  # None for engine-inserted text in text hand-off mode
    data: bytes


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


class RelayEngine:
    """Runs RelayGen over a large and a small backend: many requests, one at a time (a second request
    while a stream is still open is refused, never interleaved: both would share the KV caches)."""

    def __init__(self, large: "Backend", small: "Backend", profile: "CueProfile | str | list | None" = None,
                 config: RelayConfig | None = None):
        self.large, self.small = large, small
        self.profile = load_profile(profile)
        self.matcher = self.profile.matcher()
        self.config = (config or RelayConfig()).validated()
        self._by_ids = self._check_pair()
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

    # --- public API --------------------------------------------------------------------------
    def generate(self, prompt: "str | list[dict]", params: SamplingParams | None = None, *,
                 chat: bool = True) -> RelayResult:
        """Run to completion and return the text, its per-model segments and the stats."""
        for event in self.stream(prompt, params, chat=chat):
            if event.kind == "done":
                return event.result
        raise RuntimeError("relay stream ended without a result")  # pragma: no cover

    def stream(self, prompt: "str | list[dict]", params: SamplingParams | None = None, *,
               chat: bool = True) -> Iterator[RelayEvent]:
        """Yield text deltas tagged with the model that wrote them, switches, and a final result.

        ``chat=False`` sends a string prompt as raw text, without the chat template. A bad request fails
        here; the engine is taken when the first event is read and free again once the stream is read to
        its end or closed. A request that starts meanwhile raises ConfigError instead of sharing the caches.
        """
        params = (params or SamplingParams()).validated()
        prompt_text = self._render(prompt, chat)
        return _Run(self, prompt_text, params).events()

    def check(self, prompt: "str | list[dict]", params: SamplingParams | None = None, *, chat: bool = True) -> None:
        """Raise now what ``stream`` would reject (bad parameters, an empty or over-long prompt), without
        touching a KV cache, so a caller that must wait for the engine can fail a bad request at once."""
        (params or SamplingParams()).validated()
        self._prompt_ids(self._render(prompt, chat))

    def _prompt_ids(self, prompt_text: str) -> dict[str, list[int]]:
        """The prompt in each participating model's tokens; an error if it leaves no room to write."""
        out = {}
        for role, backend in (("large", self.large), ("small", self.small)):
            if role == "small" and self.config.mode == "large" or role == "large" and self.config.mode == "small":
                continue
            ids = backend.prompt_tokens(prompt_text)
            if len(ids) + 1 > backend.n_ctx:
                raise ContextWindowError(f"the prompt is {len(ids)} tokens, longer than the {role} model's "
                                         f"context window of {backend.n_ctx} tokens")
            out[role] = ids
        return out

    def _render(self, prompt: "str | list[dict]", chat: bool) -> str:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ConfigError("the prompt is empty")
            return self.large.chat_prompt([{"role": "user", "content": prompt}]) if chat else prompt
        if not isinstance(prompt, Sequence) or not prompt:
            raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...}")
        for m in prompt:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                raise ConfigError(f"each message needs a 'role' and a string 'content'; got {m!r}")
        if not any(m["content"].strip() for m in prompt):
            raise ConfigError("the prompt is empty")
        return self.large.chat_prompt(list(prompt))


def _render_probe(backend: "Backend", role: str) -> str:
    try:
        return backend.chat_prompt(_PROBE)
    except ConfigError:
        raise
    except Exception as e:  # a Jinja template that raises, or cannot render a plain user turn
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"the {role} model's chat template cannot render a user message ({first[:200]}); "
                          "pass chat_format='raw' (or another template) for that model") from None


class _Run:
    """One request: the state machine plus its bookkeeping. Not reused."""

    def __init__(self, engine: RelayEngine, prompt_text: str, params: SamplingParams):
        self.e, self.cfg, self.params = engine, engine.config, params
        self.prompt_text = prompt_text
        engine._prompt_ids(prompt_text)  # a bad prompt fails here, when stream() is called
        self.stats = RelayStats(handoff="ids" if engine._by_ids else "text")
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

    # --- helpers -----------------------------------------------------------------------------
    def _step(self, role: str) -> int:
        """Catch the model up, sample one token. Its time and the step's cost go to the model's stats."""
        p = self.parts[role]
        if self.last_role not in (None, role):
            self.parts[self.last_role].backend.pause()  # a server stops generating for the idle model
        self.last_role = role
        t0 = time.perf_counter()
        p.catch_up(self.pieces, self.e._by_ids)
        if len(p.context) >= p.backend.n_ctx:
            raise _ContextFull
        b = p.backend
        if p.first_step:  # what the KV cache holds from the previous request (speculation-proof)
            p.stats.cached_prompt_tokens = min(p.stats.prompt_tokens, b.cached_prefix(p.context))
            p.first_step = False
        step = b.next_token(p.context, self.sampler)
        p.stats.add(step)
        if step.draft_calls:
            self.stats.draft.add_calls(step.draft_calls)
        p.stats.seconds += time.perf_counter() - t0
        return step.token

    def _append(self, role: Role, token: int | None, data: bytes) -> str:
        """Add output; return the newly decodable text (whole characters only)."""
        self.pieces.append(_Piece(role, token, data))
        if role in self.parts and token is not None:
            part = self.parts[role]
            part.context.append(token)
            part.synced = len(self.pieces)
        delta = self.decoder.decode(data)
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
        pos = 0
        for seg in self.segments:
            start, end = pos, pos + len(seg.text)
            pos = end
            lo, hi = max(start, self.emitted), min(end, limit)
            if hi > lo:
                yield RelayEvent("text", seg.model, seg.stage, self.text[lo:hi])
                self.emitted = hi

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
        generated = 0
        reasoning_limit = self.params.max_tokens - cfg.answer_reserve_tokens
        finish = ""
        try:
            while True:
                if self.stage == "reasoning" and cfg.reasoning_end and generated >= reasoning_limit:
                    self._force(cfg.reasoning_end)
                    self._check_marker()
                    if active != answer_model:
                        yield RelayEvent("switch", answer_model, "answer")
                    active = answer_model
                if generated >= self.params.max_tokens:
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
                    active, large_run, awaiting_boundary = "large", 0, False
                    yield RelayEvent("switch", "large", self.stage)
                    continue
                if eog:
                    if in_segment:  # the small model wants to stop: the large model decides
                        active, large_run = "large", 0
                        yield RelayEvent("switch", "large", self.stage)
                        continue
                    finish = "stop"
                    break
                before = len(self.text)
                self._append(active, token, data)
                getattr(self.stats, active).generated_tokens += 1
                generated += 1
                cut = self._stop_hit(before) if self.params.stop else None
                if cut is not None:
                    self._truncate_text(cut)
                    finish = "stop_string"
                    break
                yield from self._flush(final=False)
                if self._check_marker():
                    if active != answer_model:
                        active = answer_model
                        yield RelayEvent("switch", answer_model, "answer")
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
                            yield RelayEvent("switch", "small", self.stage, cue=hit.cue)
                else:  # only the new text (and the character before it) can complete a sentence end
                    if find_sentence_end(self.text, max(segment_start, before - 1)) is not None:
                        active, large_run, awaiting_boundary = "large", 0, False
                        yield RelayEvent("switch", "large", self.stage)
                    else:
                        awaiting_boundary = len(self.text) > segment_start and ends_on_open_mark(self.text)
        except _ContextFull:
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


class _ContextFull(Exception):
    pass
