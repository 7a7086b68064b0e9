"""The checked relay's wiring in a run: the large model vets the small model's sentence when it takes
control back, in the one evaluation it makes anyway, and a cut rolls everything back to the cut.

The policies are in ``check.py``. What rolls back at a cut: the output pieces, the text, the segments and
their token counts, the reasoning-end marker's state, the participants' contexts and (at their next
evaluation, by the common prefix) both KV caches. Nothing is recomputed: the large model's token at the cut
is drawn from the row it already has, and after an accepted sentence its next token comes from the row
after it. A small-model answer is checked as one sentence when it ends, its end of generation included, so
``exact`` holds for the whole output. Text not yet checked is never streamed: a stream never retracts text.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import replace

from .check import check_segment
from .sampling import Sampler


class ContextFull(Exception):
    """A model's context window is full: the run ends (finish reason "context")."""


class CheckedRun:
    """Mixed into ``run._Run``: the state and steps of checking (inactive unless ``check`` is set)."""

    def _init_checking(self, policy) -> None:
        self.check = policy
        self.unchecked: tuple[int, int] | None = None  # (piece, character) where the unchecked sentence starts
        self.pending: tuple[int, object] | None = None  # (pieces then, own token | next-token row) for the large model
        # The small model draws from random numbers of its own, so the large model's draws (and with `exact`
        # its output) are those of the large model alone; unchecked, both share one stream as before.
        seed = (self.params.seed * 1_000_003 + 7) % 2**32
        self.small_sampler = Sampler(replace(self.params, seed=seed)) if policy.active else self.sampler

    def _open_sentence(self) -> None:
        """The small model starts a sentence (or the answer) that the large model will check."""
        if self.check.active and self.unchecked is None:
            self.unchecked = (len(self.pieces), len(self.text))

    def _pending_token(self) -> int | None:
        """The large model's token decided by the last check, if nothing was written since."""
        if self.pending is None:
            return None
        at, decided = self.pending
        self.pending = None
        if at != len(self.pieces):
            return None
        return decided if isinstance(decided, int) else self.sampler(decided)

    def _check_segment(self, end_token: int | None = None) -> bool:
        """Check the unchecked sentence now; True when it was cut (the large model writes next). ``end_token``:
        the small model's end of generation after its answer, checked as the sentence's last token (a rejected
        end is a cut with nothing thrown away: the large model goes on where the small model stopped)."""
        first_piece, _ = self.unchecked
        self.unchecked = None
        part = self.parts["large"]
        t0 = time.perf_counter()
        part.catch_up(self.pieces, True)
        if len(part.context) >= part.backend.n_ctx:
            raise ContextFull
        tokens = [p.token for p in self.pieces[first_piece:]]
        self.stats.sentences_checked += 1
        if not tokens and end_token is None:
            return False
        rows, evaluated = part.backend.check_rows(part.context, len(tokens))
        part.stats.add_calls((evaluated,), (evaluated,))
        checked = tokens if end_token is None else tokens + [end_token]
        kept, own = check_segment(self.check, self.sampler, rows, checked)
        part.stats.seconds += time.perf_counter() - t0
        if own is None:
            self.pending = (len(self.pieces), rows[len(tokens)])
            return False
        self.stats.sentences_cut += 1
        self.stats.small_tokens_discarded += len(tokens) - kept
        self.stats.cut_tokens += 1
        self._cut(first_piece + kept)
        self.pending = (len(self.pieces), own)
        return True

    def _cut(self, keep: int) -> None:
        """Roll the output back to its first ``keep`` pieces."""
        removed = self.pieces[keep:]
        for piece in removed:
            if piece.role in ("large", "small"):
                getattr(self.stats, piece.role).generated_tokens -= 1
        self.generated -= len(removed)
        for part in self.parts.values():
            if part.synced > keep:
                del part.context[len(part.context) - (part.synced - keep):]
                part.synced = keep
        pieces = self.pieces[:keep]
        self.pieces, self.text, self.segments, self.uncounted = [], "", [], {}
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stage = self.stage
        for piece in pieces:
            self.stage = piece.stage
            self._record(piece)
        self.stage = stage
        if self.answer_start is not None and self.answer_start > len(self.text):
            self.stage, self.answer_start = "reasoning", None  # the cut took the marker away
        self.marker_scan = min(self.marker_scan, len(self.text))
