"""Switch cues and the one matcher that both runtime and calibration use.

A cue fires only on word boundaries by default: "now" must not fire inside "know", "Other" not
inside "Otherwise". A cue that ends in a letter ("Now") is confirmed only once the next character
is known to be a non-word character, so at runtime it fires one token later than a plain substring
search would. The reference implementation's substring search is kept as ``mode="substring"`` for
ablations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

from ..errors import ConfigError

MatchMode = Literal["word", "substring"]

_WORDS = [
    "Therefore", "Thus", "So", "Similarly", "Also", "Alternatively", "Wait", "Hmm", "But",
    "However", "Hence", "Another", "Oh", "Maybe", "Other", "Again", "Now", "Ah", "Any",
    "Specifically", "Then", "Next",
]


def _reference_candidates() -> list[str]:
    cues: list[str] = []
    for word in _WORDS:
        for form in (word, word.lower()):
            bare = form + " " if form.lower() == "so" else form  # "So" alone would fire everywhere
            cues += [bare, form + ","]
    return cues + ["check", "double-check", "verify"]


#: The 91 candidate cues of the reference calibration.
REFERENCE_CANDIDATES: tuple[str, ...] = tuple(_reference_candidates())

#: Cues the paper's reference calibration selected for Qwen3-1.7B under Qwen3-32B. Shipped as the
#: default profile until a pair has its own calibration.
PAPER_QWEN3_CUES: tuple[str, ...] = (
    "Oh,", "another", "Thus", "Now", "Alternatively", "alternatively,", "Thus,", "Therefore",
    "similarly", "similarly,", "now", "Again", "specifically,", "Again,", "Similarly,", "Now,",
    "Specifically,", "Hence", "Similarly", "Other", "now,", "hence", "Specifically", "So ",
    "Therefore,", "Wait,", "Also", "So,",
)

# The cues the paper's calibration chose for DeepSeek-R1-Distill-Qwen-1.5B with R1-Distill-Qwen-32B (25).
PAPER_R1_CUES: tuple[str, ...] = (
    "Wait", "Thus", "thus", "similarly", "Again,", "Now", "Therefore", "hence", "Hence,", "Now,", "Thus,",
    "Oh,", "Similarly,", "Any", "Therefore,", "Alternatively,", "now,", "So,", "now", "verify", "Specifically,",
    "Alternatively", "Ah,", "wait", "So ",
)


@dataclass(frozen=True)
class CueMatch:
    cue: str
    start: int  # index of the cue's first character
    end: int  # index just past the cue
    confirmed_at: int  # index of the character whose arrival confirmed the match


def validate_cues(cues: object) -> tuple[str, ...]:
    """Return the cues as a tuple of strings, or raise ConfigError saying what is wrong."""
    if isinstance(cues, str) or not isinstance(cues, Iterable):
        raise ConfigError("cues must be a list of strings, for example ['Therefore,', 'Now']")
    out = []
    for cue in cues:
        if not isinstance(cue, str) or not cue.strip():
            raise ConfigError(f"every cue must be a non-empty string; got {cue!r}")
        out.append(cue)
    if not out:
        raise ConfigError("the cue list is empty: give at least one cue, or run with relaying off")
    return tuple(dict.fromkeys(out))


class CueMatcher:
    """Finds cue occurrences in generated text, incrementally or over a whole trace."""

    def __init__(self, cues: Iterable[str], mode: MatchMode = "word"):
        if mode not in ("word", "substring"):
            raise ConfigError(f"cue matching mode must be 'word' or 'substring', not {mode!r}")
        self.cues = validate_cues(cues)
        self.mode = mode
        self.max_len = max(len(c) for c in self.cues)
        # Longest first, so that "Now," wins over "Now" where both match at one position.
        ordered = sorted(self.cues, key=len, reverse=True)
        parts = []
        for cue in ordered:
            body = re.escape(cue)
            if mode == "word":
                if cue[0].isalnum() or cue[0] == "_":
                    body = r"(?<!\w)" + body
                if cue[-1].isalnum() or cue[-1] == "_":
                    body += r"(?=\W{end})"
            parts.append(body)
        pattern = "|".join(parts)
        self._open = re.compile(pattern.replace("{end}", ""))  # needs the next character
        self._final = re.compile(pattern.replace("{end}", "|$"))  # end of text also confirms

    def _needs_lookahead(self, cue: str) -> bool:
        return self.mode == "word" and (cue[-1].isalnum() or cue[-1] == "_")

    def find_all(self, text: str, final: bool = True) -> list[CueMatch]:
        """All non-overlapping matches; ``final`` means the text is complete (end confirms a cue)."""
        regex = self._final if final else self._open
        out = []
        for m in regex.finditer(text):
            cue = m.group(0)
            confirmed = m.end() if self._needs_lookahead(cue) else m.end() - 1
            out.append(CueMatch(cue, m.start(), m.end(), min(confirmed, len(text) - 1)))
        return out

    def fired(self, text: str, new_from: int) -> CueMatch | None:
        """The first match confirmed by characters at index >= ``new_from`` (the text just added)."""
        pos = max(0, new_from - self.max_len - 1)
        for m in self._open.finditer(text, pos):
            cue = m.group(0)
            confirmed = m.end() if self._needs_lookahead(cue) else m.end() - 1
            if confirmed >= new_from:
                return CueMatch(cue, m.start(), m.end(), confirmed)
        return None
