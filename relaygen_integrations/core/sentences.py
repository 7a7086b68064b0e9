"""Sentence ends, where a small segment hands control back to the large model.

The end set is the reference's (``.`` ``!`` ``?`` and a blank line), but a mark ends a sentence only
when whitespace follows it (or the text is complete), so "3.5" and "e.g.x" do not end anything.
When a segment's text ends exactly on a mark, the engine decides with the next token (see engine).
"""

from __future__ import annotations

import re

_END = re.compile(r"[.!?](?=\s)|\n\n")
_END_FINAL = re.compile(r"[.!?](?=\s|$)|\n\n")


def find_sentence_end(text: str, start: int = 0) -> int | None:
    """Index just past the first sentence end at or after ``start`` in text still being written, or None."""
    span = sentence_end_span(text, start)
    return span[1] if span else None


def sentence_end_span(text: str, start: int = 0, final: bool = False) -> tuple[int, int] | None:
    """(start, end) of the first sentence-end mark at or after ``start``, or None."""
    m = (_END_FINAL if final else _END).search(text, start)
    return m.span() if m else None


def ends_on_open_mark(text: str) -> bool:
    """True when the text ends on a mark whose meaning depends on the next character."""
    return text[-1:] in (".", "!", "?")
