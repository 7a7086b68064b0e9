"""Resuming after a cut (``resume=N``) on deterministic scripted models: the large model writes its token at
the cut, then the small model takes the sentence back; text, segments, stop strings, the marker, stats and
both contexts stand as if each model had written its part."""

import pytest

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine, SamplingParams
from scripted import ScriptedBackend

# The small model's script differs from the large model's in one digit (and, in TWICE, in two).
LARGE = ["We", " add", ".", " Now", ",", " the", " sum", " is", " ", "7", " and", " ", "8", ".", " Now", ",",
         " we", " stop", "."]
ONCE = [("9" if p == "7" else p) for p in LARGE]
TWICE = [{"7": "9", "8": "6"}.get(p, p) for p in LARGE]
GREEDY = SamplingParams(temperature=0, max_tokens=200)
TEXT = "".join(LARGE)


def engine(small=ONCE, check="exact", resume=1, **cfg):
    return RelayEngine(ScriptedBackend(LARGE), ScriptedBackend(small), ["Now,"],
                       RelayConfig(min_large_tokens=1, check=check, resume=resume, **cfg))


def spans(result):
    return [(s.model, s.text) for s in result.segments]


@pytest.mark.parametrize("check", ["tau=0.01", "exact"])
def test_after_the_large_models_token_the_small_model_finishes_the_sentence(check):
    e = engine(check=check)
    r = e.generate("q", GREEDY)
    assert r.text == TEXT
    assert spans(r) == [("large", "We add. Now,"), ("small", " the sum is "), ("large", "7"),
                        ("small", " and 8."), ("large", " Now,"), ("small", " we stop.")]
    st = r.stats
    assert (st.sentences_checked, st.sentences_cut, st.small_tokens_discarded, st.cut_tokens) == (3, 1, 5, 1)
    assert (st.resumes, st.resumed_tokens) == (1, 4)
    assert st.cues_fired == {"Now,": 2} and st.cues_cut == {"Now,": 1}
    assert sum(s.tokens for s in r.segments) == st.generated_tokens
    assert st.small.generated_tokens == 4 + 4 + 3 and st.large.generated_tokens == 5 + 1 + 2
    # both contexts hold the output as it stands: the rolled-back tokens are gone from both caches
    assert e.small.output_bytes().decode() == r.text and e.large.output_bytes().decode() == r.text


def test_resume_0_is_the_checked_relay_without_resuming():
    r = engine(resume=0).generate("q", GREEDY)
    assert spans(r)[1:3] == [("small", " the sum is "), ("large", "7 and 8. Now,")]
    assert (r.stats.resumes, r.stats.resumed_tokens) == (0, 0)


def test_a_resumed_stretch_is_checked_and_cut_again_within_the_bound():
    r = engine(TWICE, resume=2).generate("q", GREEDY)
    assert r.text == TEXT and r.stats.resumes == 2 and r.stats.sentences_cut == 2
    assert spans(r)[1:6] == [("small", " the sum is "), ("large", "7"), ("small", " and "), ("large", "8"),
                             ("small", ".")]
    assert r.stats.resumed_tokens == 2 + 1  # " and " kept of the first resumed stretch, "." of the second
    assert r.stats.cues_cut == {"Now,": 1}  # a sentence is cut once per cue, however often it resumes

    bounded = engine(TWICE, resume=1).generate("q", GREEDY)
    assert bounded.text == TEXT and bounded.stats.resumes == 1
    assert spans(bounded)[3:5] == [("small", " and "), ("large", "8. Now,")]  # no resumption left


def test_a_token_that_ends_the_sentence_keeps_control_with_the_large_model():
    large = ["We", " add", ". ", "Now", ",", " the", " sum", " is", " 7", ". ", "Now", ",", " we", " stop", "."]
    small = large[:9] + [";", " "] + large[10:]  # single bytes in place of ". ": the vocabularies stay one
    e = RelayEngine(ScriptedBackend(large), ScriptedBackend(small), ["Now,"],
                    RelayConfig(min_large_tokens=1, check="exact", resume=3))
    r = e.generate("q", GREEDY)
    assert r.text == "".join(large) and r.stats.sentences_cut == 1
    assert r.stats.resumes == 0  # ". " ended the sentence: the large model goes on
    assert ("large", ". Now,") in spans(r)


def test_stop_strings_and_the_marker_in_a_resumed_stretch_roll_back_with_it():
    params = SamplingParams(temperature=0, max_tokens=200, stop=("6",))
    r = engine(TWICE, resume=2).generate("q", params)
    assert r.text == TEXT and r.stats.finish_reason == "stop"  # "6" was cut before it could stop the run
    marked = engine(TWICE, resume=2, reasoning_end="and 6").generate("q", GREEDY)
    assert marked.answer == "" and marked.reasoning == marked.text == TEXT


# The small model writes the answer after the reasoning-end marker; resuming applies to it as to a sentence.
LARGE_ANSWER = ["We", " add", ".", " Answer:", " ", "7", " units", " and", " ", "8", " more", "."]


@pytest.mark.parametrize("check", ["tau=0.01", "exact"])
def test_the_small_model_resumes_its_answer_after_a_cut(check):
    small = [{"7": "9"}.get(p, p) for p in LARGE_ANSWER]
    e = RelayEngine(ScriptedBackend(LARGE_ANSWER), ScriptedBackend(small), ["Now,"],
                    RelayConfig(min_large_tokens=1, check=check, resume=1, reasoning_end="Answer:"))
    r = e.generate("q", GREEDY)
    assert r.answer == " 7 units and 8 more." and r.text == "".join(LARGE_ANSWER)
    assert spans(r)[-3:] == [("small", " "), ("large", "7"), ("small", " units and 8 more.")]
    assert r.stats.resumes == 1 and r.stats.sentences_checked == 2 and r.stats.finish_reason == "stop"
    assert r.stats.resumed_tokens == 6  # " units and 8 more.": its accepted end of generation is not a token


def test_resume_needs_a_check_and_a_count():
    with pytest.raises(ConfigError, match="check is off"):
        RelayConfig(check="off", resume=1).validated()
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="resume must be an integer"):
            RelayConfig(check="exact", resume=bad).validated()
    assert RelayConfig(check="auto", resume=2).validated().resume == 2
