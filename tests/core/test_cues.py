from relaygen_integrations.core.cues import PAPER_QWEN3_CUES, REFERENCE_CANDIDATES, CueMatcher
from relaygen_integrations.errors import ConfigError
import pytest


def test_reference_candidates_are_the_papers_91():
    assert len(REFERENCE_CANDIDATES) == 91
    assert {"So ", "So,", "so ", "so,", "Now", "now,", "check", "double-check", "verify"} <= set(REFERENCE_CANDIDATES)
    assert "So" not in REFERENCE_CANDIDATES  # bare "So" would fire inside every "So..." word
    assert len(PAPER_QWEN3_CUES) == 28


def test_word_boundaries_know_does_not_fire_now():
    m = CueMatcher(["now", "Other"])
    assert m.find_all("I know the answer. Otherwise, no.") == []
    assert [x.cue for x in m.find_all("and now we add. Other ways")] == ["now", "Other"]


def test_substring_mode_reproduces_the_reference_bug_for_ablation():
    m = CueMatcher(["now"], mode="substring")
    assert [x.start for x in m.find_all("I know")] == [3]


def test_word_cue_needs_the_next_character_to_fire():
    m = CueMatcher(["Now"])
    assert m.fired("... Now", new_from=4) is None  # "Nowhere" is still possible
    hit = m.fired("... Now we", new_from=7)
    assert hit.cue == "Now" and hit.confirmed_at == 7
    assert m.fired("... Nowhere", new_from=7) is None


def test_longest_cue_wins_and_punctuated_cues_fire_at_once():
    m = CueMatcher(["So,", "So ", "Now", "Now,"])
    assert m.fired("x. Now,", new_from=6).cue == "Now,"
    assert m.fired("x. So,", new_from=5).cue == "So,"
    assert m.fired("Also, ", new_from=0) is None  # "so," inside "Also," is not at a word start


def test_fired_only_reports_matches_confirmed_by_new_text():
    m = CueMatcher(["Thus,"])
    text = "Thus, a. Thus, b"
    assert m.fired(text, new_from=6).start == 9
    assert m.fired(text, new_from=len(text)) is None


def test_final_text_confirms_a_trailing_word_cue():
    m = CueMatcher(["Now"])
    assert m.find_all("so Now", final=False) == []
    assert [x.cue for x in m.find_all("so Now", final=True)] == ["Now"]


@pytest.mark.parametrize("bad", [[], "Now", [""], ["ok", 3], None])
def test_malformed_cue_lists_are_rejected(bad):
    with pytest.raises(ConfigError):
        CueMatcher(bad)
