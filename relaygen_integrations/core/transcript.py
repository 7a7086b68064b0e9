"""The output of one request as it is written: pieces, text, per-model segments, and what may be streamed.

A run appends one piece per token (or engine-inserted text); the transcript decodes it (whole UTF-8
characters only), attributes it to a segment of its model and stage, counts tokens per segment, finds the
reasoning-end marker and stop strings, and holds back text that could still become a stop string. A
checked relay's cut rolls it back to any earlier piece; a stop string truncates its text.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Iterator

from .events import Role, Segment, Stage


@dataclass
class Piece:
    """One unit of output: a token written by a model, or text the engine inserted."""

    role: Role
    token: int | None  # None for engine-inserted text in text hand-off mode
    data: bytes
    stage: Stage = "reasoning"


class Transcript:
    """The output so far; ``stop``: the request's stop strings (text that could start one is held back)."""

    def __init__(self, stop: tuple[str, ...] = (), marker: str | None = None):
        self.stop, self.marker = stop, marker
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.emitted = 0  # characters of self.text already streamed
        self._reset([])

    def _reset(self, pieces: list[Piece]) -> None:
        self.pieces: list[Piece] = pieces
        self.text = ""  # decoded output so far
        self.segments: list[Segment] = []
        self.uncounted: dict[str, int] = {}  # tokens per model that have no text (so no segment) yet
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.stage: Stage = "reasoning"
        self.answer_start: int | None = None  # where the answer stage's text starts
        self.marker_scan = 0

    def __len__(self) -> int:
        return len(self.pieces)

    def append(self, piece: Piece) -> str:
        """The piece in the output: its text, its segment, its token count. Returns the new text."""
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

    def rollback(self, keep: int) -> list[Piece]:
        """Back to the first ``keep`` pieces (a checked relay's cut); returns the pieces removed."""
        removed, kept = self.pieces[keep:], self.pieces[:keep]
        stage, marker_scan = self.stage, self.marker_scan
        answer_start = self.answer_start
        self._reset([])
        for piece in kept:
            self.stage = piece.stage
            self.append(piece)
        self.stage, self.answer_start = stage, answer_start
        if self.answer_start is not None and self.answer_start > len(self.text):
            self.stage, self.answer_start = "reasoning", None  # the cut took the marker away
        self.marker_scan = min(marker_scan, len(self.text))
        return removed

    def found_marker(self) -> bool:
        """Whether the reasoning-end marker has just appeared: the answer stage starts after it."""
        marker = self.marker
        if marker is None or self.stage != "reasoning":
            return False
        i = self.text.find(marker, max(0, self.marker_scan - len(marker)))
        self.marker_scan = len(self.text)
        if i < 0:
            return False
        self.stage = "answer"
        self.answer_start = i + len(marker)
        return True

    def stop_hit(self, from_char: int) -> int | None:
        """Where the first stop string that text from ``from_char`` on completes begins, if any."""
        hits = [i for s in self.stop if (i := self.text.find(s, max(0, from_char - len(s)))) >= 0]
        return min(hits) if hits else None

    def truncate_text(self, cut: int) -> None:
        """Drop the text from character ``cut`` on (a stop string), segments included."""
        self.text = self.text[:cut]
        pos, kept = 0, []
        for seg in self.segments:
            if pos >= cut:
                break
            seg.text = seg.text[: cut - pos]
            pos += len(seg.text)
            kept.append(seg)
        self.segments = kept

    def flush(self, final: bool, limit: int | None = None) -> Iterator[tuple[Role, Stage, str]]:
        """Text that can no longer become part of a stop string (nor lies past ``limit``, text not yet
        checked), segment by segment as ``(model, stage, text)``."""
        end = len(self.text) if final else len(self.text) - self.holdback
        if limit is not None and not final:
            end = min(end, limit)
        pos = 0
        for seg in self.segments:
            start, stop = pos, pos + len(seg.text)
            pos = stop
            lo, hi = max(start, self.emitted), min(stop, end)
            if hi > lo:
                yield seg.model, seg.stage, self.text[lo:hi]
                self.emitted = hi

    def close(self) -> None:
        """The output is complete: bytes of a character that never completed are dropped (the output never
        holds a broken character), and tokens whose text never came go to their model's last segment, so
        the segments account for every token written."""
        self.decoder.reset()
        for role, n in self.uncounted.items():
            mine = [seg for seg in self.segments if seg.model == role]
            if mine:
                mine[-1].tokens += n
            else:
                self.segments.append(Segment(role, self.stage, tokens=n))
        self.uncounted.clear()

    @property
    def reasoning(self) -> str:
        return self.text[: self.answer_start] if self.answer_start is not None else self.text

    @property
    def answer(self) -> str:
        return self.text[self.answer_start:] if self.answer_start is not None else ""
