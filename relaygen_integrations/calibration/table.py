"""Steps 3-4: pool the margins after each candidate cue, compare with the rest, select cues.

For a cue, its segment after an occurrence runs from just after the cue up to, not including, the next
sentence end (the same matcher and sentence rule as at runtime). ``delta = mean(segment margins) -
mean(all other tokens' margins)``; a cue is selected when ``delta > threshold`` and it occurs at least
``min_occurrences`` times.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from ..core.cues import CueMatcher, MatchMode
from ..core.sentences import sentence_end_span
from ..errors import ConfigError
from .margins import TraceMargins


@dataclass
class CueStats:
    cue: str
    occurrences: int
    segments: int  # occurrences whose segment holds at least one token
    tokens: int
    mean: float
    std: float
    sem: float
    delta: float
    selected: bool = False

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def segment_mask(tm: TraceMargins, matcher: CueMatcher) -> tuple[np.ndarray, int, int]:
    """Tokens inside the post-cue segments of one trace; also the occurrence and non-empty segment counts."""
    mask = np.zeros(len(tm.margins), dtype=bool)
    occurrences = segments = 0
    for m in matcher.find_all(tm.text, final=True):
        occurrences += 1
        end = sentence_end_span(tm.text, m.end, final=True)
        stop = end[0] if end else len(tm.text)
        inside = (tm.token_starts >= m.end) & (tm.token_starts < stop)
        segments += bool(inside.any())
        mask |= inside
    return mask, occurrences, segments


def cue_table(traces: list[TraceMargins], candidates: Iterable[str], mode: MatchMode = "word") -> tuple[list[CueStats], float]:
    """Per-cue statistics over all traces, and the overall mean margin."""
    all_margins = np.concatenate([t.margins for t in traces]) if traces else np.zeros(0)
    if all_margins.size == 0:
        raise ConfigError("the traces hold no scored tokens")
    rows = []
    for cue in dict.fromkeys(candidates):
        matcher = CueMatcher([cue], mode)
        occurrences, segments = 0, 0
        masks = []
        for tm in traces:
            mask, occ, seg = segment_mask(tm, matcher)
            masks.append(mask)
            occurrences += occ
            segments += seg
        post = np.concatenate([t.margins[m] for t, m in zip(traces, masks)])
        rest = np.concatenate([t.margins[~m] for t, m in zip(traces, masks)])
        n = post.size
        mean = float(post.mean()) if n else float("nan")
        std = float(post.std(ddof=1)) if n > 1 else float("nan")
        sem = std / math.sqrt(n) if n > 1 else float("nan")
        delta = mean - float(rest.mean()) if n and rest.size else float("nan")
        rows.append(CueStats(cue, occurrences, segments, n, mean, std, sem, delta))
    if not any(r.tokens for r in rows):
        raise ConfigError("no candidate cue occurs in the traces (with a scored segment after it): "
                          "use more or longer traces, or other candidates")
    return rows, float(all_margins.mean())


def select_cues(rows: list[CueStats], threshold: float = 0.0, min_occurrences: int = 5) -> list[str]:
    """Cues whose post-cue margin beats the rest by more than ``threshold``, best first; marks them selected."""
    chosen = [r for r in rows if r.tokens and not math.isnan(r.delta) and r.delta > threshold
              and r.occurrences >= min_occurrences]
    chosen.sort(key=lambda r: r.delta, reverse=True)
    for r in rows:
        r.selected = r in chosen
    return [r.cue for r in chosen]
