"""Step 2: the small model is teacher-forced over each trace and scores its confidence at every token.

The probability margin p(top-1) - p(top-2) of the small model's next-token distribution is recorded for each
trace token, with the character where that token starts, so cue segments (character spans) map to tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.scoring import Scoring
from ..errors import ConfigError


@dataclass
class TraceMargins:
    text: str
    token_starts: np.ndarray  # character index in ``text`` where each scored token starts
    margins: np.ndarray  # margin of the distribution that predicted that token
    truncated: bool = False


def char_offsets(text: str, token_bytes: list[bytes]) -> np.ndarray:
    """Start character of each token, from the tokens' raw bytes (multi-byte characters handled)."""
    raw = text.encode("utf-8")
    joined = b"".join(token_bytes)
    if not joined.endswith(raw):
        raise ConfigError("the small model's tokens do not reproduce the trace text; cannot map cue positions")
    shift = len(joined) - len(raw)  # e.g. a SentencePiece leading space
    byte_to_char = np.repeat(np.arange(len(text) + 1), [len(c.encode("utf-8")) for c in text] + [1])
    starts = np.cumsum([0] + [len(b) for b in token_bytes[:-1]]) - shift
    return byte_to_char[np.clip(starts, 0, len(raw))]


def teacher_force(small: Scoring, prompt_text: str, trace: str) -> TraceMargins:
    """Margins of the small model at every token of ``trace``, after the chat-templated prompt."""
    prompt_ids = small.prompt_tokens(prompt_text)
    trace_ids = small.tokenize(trace.encode("utf-8"))
    room = small.n_ctx - len(prompt_ids)
    truncated = len(trace_ids) > room
    if room < 2:
        raise ConfigError(f"the prompt alone fills the small model's context ({small.n_ctx} tokens)")
    starts = char_offsets(trace, [small.token_bytes(t) for t in trace_ids])
    trace_ids, starts = trace_ids[:room], starts[:room]
    if not trace_ids:
        return TraceMargins(trace, np.zeros(0, dtype=int), np.zeros(0), truncated)
    margins = small.position_margins(prompt_ids + trace_ids, len(prompt_ids))
    return TraceMargins(trace, starts, margins, truncated)
