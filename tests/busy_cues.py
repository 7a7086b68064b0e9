"""A cue profile that fires on text any model writes, so no test depends on a real model happening to
write a particular word: every letter is a cue, matched as a substring, so a cue fires as soon as the
large model has written ``min_large_tokens`` tokens of prose (``tests/any-letter.json``)."""

from __future__ import annotations

from pathlib import Path

from relaygen_integrations.core.profile import load_profile

ANY_LETTER_FILE = Path(__file__).with_name("any-letter.json")
ANY_LETTER = load_profile(ANY_LETTER_FILE)
LETTERS = ANY_LETTER.cues
