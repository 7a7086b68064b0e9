"""Cues chosen by what the check accepts: the checked relay's own criterion, beside the paper's margins.

For each occurrence of a candidate cue in the large model's calibration traces, the small model writes the
sentence after it (greedy, as at a benchmark) from where the cue fires at runtime, and the large model
checks that sentence under the pair's tau, as the checked relay would. A cue's *accepted share* is the
fraction of those small-model tokens the check keeps. Label-free: only the traces and the two models.

Selection rule (``select="acceptance"``): a cue is kept when its accepted share is at least ``min_accepted``
(default: the pooled share over every scored sentence of every candidate, i.e. better than a cue on
average) and at least ``min_occurrences`` of its sentences were scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..core.check import CheckPolicy, LogitRows, check_segment
from ..core.cues import CueMatcher, MatchMode
from ..core.sampling import Sampler, SamplingParams
from ..core.sentences import ends_on_open_mark, find_sentence_end
from ..errors import ConfigError
from .margins import char_offsets

DEFAULT_PER_CUE = 20  # sentences scored per cue at most (the first occurrences, trace by trace)
MAX_SENTENCE_TOKENS = 64


@dataclass
class Acceptance:
    sentences: int = 0  # sentences after the cue the small model wrote and the large model checked
    whole: int = 0  # ... accepted whole
    tokens: int = 0  # their small-model tokens
    kept: int = 0  # ... that the check kept

    @property
    def share(self) -> float:
        return self.kept / self.tokens if self.tokens else float("nan")


def fire_points(trace: str, token_starts: np.ndarray, cues: Iterable[str], mode: MatchMode) -> dict[int, list[str]]:
    """{tokens of the trace before the small model takes over: cues firing there}. A cue fires on the token
    holding the character that confirms it, as at runtime."""
    points: dict[int, list[str]] = {}
    for cue in cues:
        for m in CueMatcher([cue], mode).find_all(trace, final=True):
            cut = int(np.searchsorted(token_starts, m.confirmed_at, side="right"))
            if 0 < cut < len(token_starts):
                points.setdefault(cut, []).append(cue)
    return points


def small_sentence(small, context: list[int], sampler: Sampler) -> list[int]:
    """The small model's greedy sentence after ``context``, by the relay's rule (a mark and whitespace; a
    look-ahead token that only confirms the end is not kept), at most MAX_SENTENCE_TOKENS."""
    out: list[int] = []
    text = b""
    while len(out) < MAX_SENTENCE_TOKENS and len(context) + len(out) < small.n_ctx - 1:
        token = small.next_token(context + out, sampler).token
        if small.is_end_of_generation(token):
            break
        piece = small.token_bytes(token)
        if piece[:1].isspace() and out and ends_on_open_mark(text.decode("utf-8", "replace")):
            break  # the mark ended the sentence; this token is not kept
        out.append(token)
        text += piece
        if find_sentence_end(text.decode("utf-8", "replace")) is not None:
            break
    return out


def cue_acceptance(small, large, traces: Sequence[tuple[list[int], str]], candidates: Iterable[str],
                   mode: MatchMode, tau: float, per_cue: int = DEFAULT_PER_CUE,
                   on_trace: Callable[[], None] | None = None) -> dict[str, Acceptance]:
    """Per candidate cue, what the check at ``tau`` accepts of the small model's sentences after it.
    ``traces``: (prompt ids, trace text) pairs; the two models share one vocabulary."""
    if not large.can_check():
        raise ConfigError("choosing cues by acceptance needs the large model's rows for a sentence (a check)")
    policy, greedy = CheckPolicy("tau", tau).validated(), Sampler(SamplingParams(temperature=0))
    candidates = list(dict.fromkeys(candidates))
    stats = {cue: Acceptance() for cue in candidates}
    for prompt, trace in traces:
        ids = small.tokenize(trace.encode("utf-8"))
        starts = char_offsets(trace, [small.token_bytes(t) for t in ids])
        room = max(0, small.n_ctx - len(prompt) - MAX_SENTENCE_TOKENS - 2)
        ids, starts = ids[:room], starts[:room]
        for cut, cues in sorted(fire_points(trace, starts, candidates, mode).items()):
            wanted = [c for c in cues if stats[c].sentences < per_cue]
            if not wanted:
                continue
            context = prompt + ids[:cut]
            sentence = small_sentence(small, context, greedy)
            if not sentence:
                continue
            rows, _ = large.check_rows(context + sentence, len(sentence))
            scores = LogitRows(rows) if isinstance(rows, np.ndarray) else rows
            kept, own = check_segment(policy, greedy, scores, sentence)
            for cue in wanted:
                a = stats[cue]
                a.sentences, a.whole = a.sentences + 1, a.whole + (own is None)
                a.tokens, a.kept = a.tokens + len(sentence), a.kept + kept
        if on_trace:
            on_trace()
    return stats


def pooled_share(stats: dict[str, Acceptance]) -> float:
    """The accepted share over every scored sentence of every cue (a sentence counts once per cue)."""
    tokens = sum(a.tokens for a in stats.values())
    return sum(a.kept for a in stats.values()) / tokens if tokens else float("nan")


def select_by_acceptance(stats: dict[str, Acceptance], min_accepted: float | None, min_occurrences: int,
                         occurrences: dict[str, int]) -> tuple[list[str], float]:
    """Cues whose accepted share is at least ``min_accepted`` (None: the pooled share), best first, with
    at least ``min_occurrences`` occurrences in the traces and scored sentences; and the bar used."""
    bar = pooled_share(stats) if min_accepted is None else float(min_accepted)
    chosen = [c for c, a in stats.items() if a.tokens and a.share >= bar
              and min(a.sentences, occurrences.get(c, 0)) >= min_occurrences]
    chosen.sort(key=lambda c: (-stats[c].share, -stats[c].sentences))
    return chosen, bar
