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
    with pytest.raises(ConfigError, match="check must be auto, off, exact"):
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



# check="auto" (the default): the cue profile's own default policy, where the pair can check.
def auto_engine(large=None, check_default="off"):
    from relaygen_integrations.core.profile import CueProfile

    profile = CueProfile("pair", ("Now,",), check_default=check_default)
    return RelayEngine(large or ScriptedBackend(LARGE), ScriptedBackend(SMALL), profile,
                       RelayConfig(min_large_tokens=1))


def test_auto_runs_the_profiles_default_policy_and_says_which():
    assert RelayConfig().check == "auto"
    r = auto_engine(check_default="tau=0.01").generate("q", GREEDY)
    assert r.text == "We add. Now, the sum is 7. Now, we stop." and r.stats.check == "tau=0.01"
    assert r.stats.sentences_cut == 1
    off = auto_engine().generate("q", GREEDY)  # a profile that names no default: today's unchecked relay
    same = {"stats": None, "summary": None, "seed": None}  # stats hold timings; greedy draws a fresh seed per request
    assert off.to_dict() | same == engine("off").generate("q", GREEDY).to_dict() | same
    assert off.stats.check == "off" and off.stats.sentences_checked == 0


def test_auto_is_off_where_the_pair_cannot_check_and_an_explicit_policy_is_an_error():
    from relaygen_integrations.speculative import SpeculativeBackend, prompt_lookup

    large = SpeculativeBackend(ScriptedBackend(LARGE), prompt_lookup(3))
    e = auto_engine(large, check_default="tau=0.01")
    assert str(e.check_policy) == "off" and e.generate("q", GREEDY).stats.check == "off"
    with pytest.raises(ConfigError, match="probability of every small-model token"):
        RelayEngine(large, ScriptedBackend(SMALL), ["Now,"], RelayConfig(check="tau=0.01"))


def test_a_profiles_default_check_is_read_and_validated(tmp_path):
    import json

    from relaygen_integrations.core.profile import load_profile

    def profile(check):
        path = tmp_path / "p.json"
        path.write_text(json.dumps({"cues": ["Now,"], "check": check}))
        return load_profile(path)

    assert str(profile({"tau": 0.25}).check_default) == "off"
    assert str(profile({"tau": 0.25, "default": "tau"}).check_default) == "tau=0.25"
    assert str(profile({"default": "exact"}).check_default) == "exact"
    for bad, why in (({"default": "tau"}, "no calibrated check.tau"), ({"default": "auto"}, "not 'auto'"), ("tau", "object"),
                     ({"tau": 0.25, "default": "often"}, "check must be")):
        with pytest.raises(ConfigError, match=why):
            profile(bad)
