"""The checked relay on deterministic scripted models: the large model cuts the small model's sentence at the
token it rejects, and text, segments, stop strings, the marker, stats and both contexts roll back to the cut."""

import pytest

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine, SamplingParams
from scripted import ScriptedBackend

# The small model's script differs from the large model's in one digit: the step the large model rejects.
LARGE = ["We", " add", ".", " Now", ",", " the", " sum", " is", " ", "7", ".", " Now", ",", " we", " stop", "."]
SMALL = [("9" if p == "7" else p) for p in LARGE]
GREEDY = SamplingParams(temperature=0, max_tokens=200)


def engine(check="tau=0.01", **cfg):
    return RelayEngine(ScriptedBackend(LARGE), ScriptedBackend(SMALL), ["Now,"],
                       RelayConfig(min_large_tokens=1, check=check, **cfg))


def spans(result):
    return [(s.model, s.text) for s in result.segments]


def test_off_keeps_the_small_models_wrong_step():
    r = engine("off").generate("q", GREEDY)
    assert r.text == "We add. Now, the sum is 9. Now, we stop."
    assert r.stats.sentences_checked == 0


@pytest.mark.parametrize("check", ["tau=0.01", "exact"])
def test_the_large_model_cuts_at_the_rejected_token_and_writes_its_own(check):
    e = engine(check)
    r = e.generate("q", GREEDY)
    assert r.text == "We add. Now, the sum is 7. Now, we stop."
    assert spans(r) == [("large", "We add. Now,"), ("small", " the sum is "), ("large", "7. Now,"),
                        ("small", " we stop.")]
    st = r.stats
    assert (st.sentences_checked, st.sentences_cut, st.small_tokens_discarded, st.cut_tokens) == (2, 1, 2, 1)
    assert st.small.generated_tokens == 4 + 3 and st.large.generated_tokens == 5 + 4
    assert sum(s.tokens for s in r.segments) == st.generated_tokens
    # both contexts hold the output as it stands: the cut tokens are gone from the small model's cache too
    assert e.small.output_bytes().decode() == r.text and e.large.output_bytes().decode() == r.text
    assert st.large.row_calls  # the check kept every row of the catch-up call


def test_a_stream_never_shows_text_the_large_model_threw_away():
    events = list(engine().stream("q", GREEDY))
    deltas = [ev.text for ev in events if ev.kind == "text"]
    assert "".join(deltas) == events[-1].result.text and not any("9" in d for d in deltas)


def test_a_stop_string_in_a_rejected_token_is_rolled_back_with_it():
    params = SamplingParams(temperature=0, max_tokens=200, stop=("9",))
    assert engine("off").generate("q", params).stats.finish_reason == "stop_string"
    r = engine().generate("q", params)
    assert r.text == "We add. Now, the sum is 7. Now, we stop." and r.stats.finish_reason == "stop"


def test_a_marker_the_small_model_wrote_in_a_rejected_token_is_rolled_back_with_it():
    unchecked = engine("off", reasoning_end="is 9").generate("q", GREEDY)
    assert unchecked.reasoning == "We add. Now, the sum is 9" and unchecked.answer
    r = engine(reasoning_end="is 9").generate("q", GREEDY)
    assert r.answer == "" and r.reasoning == r.text == "We add. Now, the sum is 7. Now, we stop."


def test_the_budget_ending_inside_a_sentence_checks_it_first():
    r = engine().generate("q", SamplingParams(temperature=0, max_tokens=10))  # 5 large + 5 small: "...is 9"
    assert r.text == "We add. Now, the sum is 7" and r.stats.finish_reason == "length"
    assert r.stats.sentences_cut == 1 and r.stats.generated_tokens == 10


def test_a_large_model_that_cannot_give_rows_is_refused_with_the_reason():
    from relaygen_integrations.speculative import SpeculativeBackend, prompt_lookup

    large = SpeculativeBackend(ScriptedBackend(LARGE), prompt_lookup(3))
    with pytest.raises(ConfigError, match="probability of every small-model token"):
        RelayEngine(large, ScriptedBackend(SMALL), ["Now,"], RelayConfig(check="exact"))
    with pytest.raises(ConfigError, match="share a vocabulary"):
        RelayEngine(ScriptedBackend(LARGE), ScriptedBackend(SMALL, extra_vocab=[b"zz"]), ["Now,"],
                    RelayConfig(check="exact"))
    with pytest.raises(ConfigError, match="check must be off, exact"):
        RelayConfig(check="sometimes").validated()
    assert RelayEngine(large, ScriptedBackend(SMALL), ["Now,"], RelayConfig(mode="large", check="exact"))


# The small model writes the answer after the reasoning-end marker: the large model checks it as it ends.
LARGE_ANSWER = ["We", " add", ".", " Now", ",", " the", " sum", " is", " ", "7", ".", " Answer:", " ", "7", " units", "."]


def answer_engine(check, small_pieces, eos_at=()):
    return RelayEngine(ScriptedBackend(LARGE_ANSWER), ScriptedBackend(small_pieces, eos_at=eos_at), ["Now,"],
                       RelayConfig(min_large_tokens=1, check=check, reasoning_end="Answer:"))


@pytest.mark.parametrize("check", ["tau=0.01", "exact"])
def test_the_small_models_answer_is_checked_too(check):
    small = ["9" if i == 13 else p for i, p in enumerate(LARGE_ANSWER)]
    assert answer_engine("off", small).generate("q", GREEDY).answer == " 9 units."
    r = answer_engine(check, small).generate("q", GREEDY)
    assert r.answer == " 7 units." and r.text == "".join(LARGE_ANSWER)
    assert spans(r)[-2:] == [("small", " "), ("large", "7 units.")]
    assert (r.stats.sentences_checked, r.stats.sentences_cut, r.stats.small_tokens_discarded) == (2, 1, 3)


@pytest.mark.parametrize("check", ["tau=0.01", "exact"])
def test_a_small_model_stopping_where_the_large_model_would_go_on_is_a_cut_with_nothing_thrown_away(check):
    stop_at = len("".join(LARGE_ANSWER[:14]))  # the small model ends its answer after " 7"
    assert answer_engine("off", LARGE_ANSWER, [stop_at]).generate("q", GREEDY).answer == " 7"
    r = answer_engine(check, LARGE_ANSWER, [stop_at]).generate("q", GREEDY)
    assert r.answer == " 7 units." and spans(r)[-2:] == [("small", " 7"), ("large", " units.")]
    assert (r.stats.sentences_cut, r.stats.small_tokens_discarded, r.stats.cut_tokens) == (1, 0, 1)
    assert r.stats.finish_reason == "stop"


def test_an_accepted_answer_ends_the_run_where_the_small_model_ended_it():
    r = answer_engine("exact", LARGE_ANSWER).generate("q", GREEDY)
    assert r.answer == " 7 units." and spans(r)[-1] == ("small", " 7 units.")
    assert (r.stats.sentences_checked, r.stats.sentences_cut) == (2, 0)


# Early hand-back (BiLD's fallback rule): the small model returns control before a token it is unsure of.
UNSURE_AT = len("We add. Now, the sum is ")  # where the small model would write its wrong digit


@pytest.mark.parametrize("check", ["off", "exact"])
def test_an_unsure_small_model_hands_back_before_writing_the_token(check):
    def run(handback):
        small = ScriptedBackend(SMALL, unsure_at=[UNSURE_AT])
        e = RelayEngine(ScriptedBackend(LARGE), small, ["Now,"],
                        RelayConfig(min_large_tokens=1, check=check, handback=handback))
        return e, e.generate("q", GREEDY)

    _, sure = run(0.0)
    assert ("9" in sure.text) == (check == "off") and sure.stats.handbacks == 0
    e, r = run(0.5)
    assert r.text == "We add. Now, the sum is 7. Now, we stop." and r.stats.handbacks == 1
    assert spans(r) == [("large", "We add. Now,"), ("small", " the sum is "), ("large", "7. Now,"),
                        ("small", " we stop.")]
    assert r.stats.sentences_cut == 0 and r.stats.small_tokens_discarded == 0  # nothing to cut: it never wrote "9"
    assert e.small.output_bytes().decode() == r.text and e.large.output_bytes().decode() == r.text


def test_a_handback_out_of_range_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"handback must be a probability in \[0, 1\)"):
        RelayConfig(handback=1.5).validated()
