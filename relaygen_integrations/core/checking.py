"""The checked relay in a run: the large model vets the small model's sentence when it takes control back,
in the one evaluation it makes anyway, and says where to cut.

The policies are in ``check.py``; this is their wiring. ``SentenceCheck`` remembers where the unchecked
sentence starts, asks the large model for its rows over it, and returns a ``Cut`` (how many pieces stand
and the large model's own token there) or None. The run rolls back its transcript and the participants'
contexts to the cut (the KV caches follow at their next evaluation, by the common prefix). Nothing is
recomputed: the large model's token at the cut is drawn from the row it already has, and after an
accepted sentence its next token comes from the row after it. A small-model answer is checked as one
sentence when it ends, its end of generation included, so ``exact`` holds for the whole output. Text not
yet checked is never streamed: a stream never retracts text.

Resuming (``resume=N``): after a cut the large model writes its token, and the small model may take the
sentence back to finish it, checked in turn when it ends, at most N times per sentence. With ``exact`` this
is sentence-length speculative decoding: the large model writes only where its draw differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .check import CheckPolicy, LogitRows, check_segment
from .sampling import Sampler

if TYPE_CHECKING:
    from .events import RelayStats
    from .participant import Participant
    from .transcript import Transcript


class ContextFull(Exception):
    """A model's context window is full: the run ends (finish reason "context")."""


@dataclass(frozen=True)
class Cut:
    keep: int  # pieces of the transcript that stand
    own: int  # the large model's token in place of the first rejected one


class SentenceCheck:
    """One request's checking: inactive (``policy`` off) checks nothing and never holds text back."""

    def __init__(self, policy: CheckPolicy, sampler: Sampler, stats: "RelayStats", resume: int = 0):
        self.policy, self.sampler, self.stats = policy, sampler, stats
        self.start: tuple[int, int] | None = None  # (piece, character) where the unchecked sentence starts
        self._pending: tuple[int, object] | None = None  # (pieces then, own token | its draw from the next row)
        self.resume = resume if policy.active else 0
        self._resumes_left = 0  # in the sentence being written
        self._cut_at: int | None = None  # pieces standing after the last cut, while a resumption is possible
        self.resumed = False  # the open stretch is a resumed one
        self.cue: str | None = None  # the cue that began the sentence (None: the answer)

    @property
    def open(self) -> bool:
        """A sentence is waiting to be checked."""
        return self.start is not None

    @property
    def visible(self) -> int | None:
        """How far text may be streamed (None: all of it)."""
        return self.start[1] if self.start is not None else None

    def begin(self, transcript: "Transcript", cue: str | None = None, resumed: bool = False) -> None:
        """The small model starts a sentence after ``cue`` (or the answer) that the large model will check,
        or takes one back after a cut (``resumed``)."""
        if self.policy.active and self.start is None:
            self.start = (len(transcript), len(transcript.text))
            self.resumed = resumed
            if not resumed:
                self.cue, self._resumes_left, self._cut_at = cue, self.resume, None

    def resume_due(self, pieces: int) -> bool:
        """The large model has just written its token at a cut, and the sentence has a resumption left."""
        return self._cut_at is not None and pieces == self._cut_at + 1

    def take_resumption(self, take: bool) -> bool:
        """After ``resume_due``: the small model takes the sentence back (counted) or not; asked once per cut."""
        self._cut_at = None
        if take:
            self._resumes_left -= 1
            self.stats.resumes += 1
        return take

    def pending_token(self, pieces: int) -> int | None:
        """The large model's token decided by the last check, if nothing was written since."""
        if self._pending is None:
            return None
        at, decided = self._pending
        self._pending = None
        if at != pieces:
            return None
        return decided if isinstance(decided, int) else decided()

    def check(self, large: "Participant", transcript: "Transcript", end_token: int | None = None) -> Cut | None:
        """Check the unchecked sentence now. ``end_token``: the small model's end of generation after its
        answer, checked as the sentence's last token (a rejected end is a cut with nothing thrown away:
        the large model goes on where the small model stopped)."""
        first_piece, _ = self.start
        self.start = None
        t0 = time.perf_counter()
        large.catch_up(transcript.pieces, True)
        if len(large.context) >= large.backend.n_ctx:
            raise ContextFull
        tokens = [p.token for p in transcript.pieces[first_piece:]]
        self.stats.sentences_checked += 1
        if not tokens and end_token is None:
            return None
        rows, evaluated = large.backend.check_rows(large.context, len(tokens), end_token)
        scores = LogitRows(rows) if isinstance(rows, np.ndarray) else rows
        large.stats.add_calls((evaluated,), (evaluated,))
        large.stats.server_requests += scores.requests
        checked = tokens if end_token is None else tokens + [end_token]
        kept, own = check_segment(self.policy, self.sampler, scores, checked)
        large.stats.seconds += time.perf_counter() - t0
        if self.resumed:
            self.stats.resumed_tokens += min(kept, len(tokens))  # an accepted end of generation is no token
        if own is None:
            self._pending = (len(transcript), lambda: scores.draw(len(tokens), self.sampler))
            return None
        self.stats.sentences_cut += 1
        if self.cue is not None and not self.resumed:
            self.stats.cues_cut[self.cue] = self.stats.cues_cut.get(self.cue, 0) + 1
        self.stats.small_tokens_discarded += len(tokens) - kept
        self.stats.cut_tokens += 1
        keep = first_piece + kept
        self._pending = (keep, own)
        self._cut_at = keep if self._resumes_left > 0 else None
        return Cut(keep, own)
