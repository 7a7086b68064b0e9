"""The relay state machine on deterministic scripted models: who writes what, and when."""

import pytest

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine, SamplingParams
from scripted import ScriptedBackend

GREEDY = SamplingParams(temperature=0, max_tokens=200)
SCRIPT = ["We", " start", " with", " the", " numbers", ".", " Now", ",", " we", " add", " 3", ".", "5", " to",
          " it", ".", " Then", " done", "."]


def pair(pieces=SCRIPT, cues=("Now,",), small_eos=(), large_kw=None, small_kw=None, **cfg):
    large = ScriptedBackend(pieces, **(large_kw or {}))
    small = ScriptedBackend(pieces, eos_at=small_eos, **(small_kw or {}))
    return RelayEngine(large, small, list(cues), RelayConfig(**cfg))


def spans(result):
    return [(s.model, s.text) for s in result.segments]


def test_cue_hands_one_sentence_to_the_small_model_decimals_included():
    r = pair().generate("add", GREEDY)
    assert spans(r) == [("large", "We start with the numbers. Now,"), ("small", " we add 3.5 to it."),
                        ("large", " Then done.")]
    assert r.stats.switches == 1 and r.stats.cues_fired == {"Now,": 1}
    assert r.stats.large.generated_tokens == 11 and r.stats.small.generated_tokens == 8
    assert r.stats.boundary_tokens_discarded == 1  # " Then" confirmed the period, then was dropped
    assert r.stats.finish_reason == "stop" and r.stats.handoff == "ids"


def test_know_does_not_fire_now():
    pieces = ["I", " know", " the", " way", " home", " and", " know", " it", "."]
    r = pair(pieces, cues=("now",)).generate("q", GREEDY)
    assert r.stats.switches == 0 and spans(r) == [("large", "".join(pieces))]


def test_substring_mode_fires_inside_words_like_the_reference():
    from relaygen_integrations.core.profile import load_profile

    pieces = ["I", " really", " do", " truly", " know", " it", " well", "."]
    large, small = ScriptedBackend(pieces), ScriptedBackend(pieces)
    r = RelayEngine(large, small, load_profile(["now"], mode="substring")).generate("q", GREEDY)
    assert r.stats.switches == 1


def test_min_large_tokens_blocks_an_early_cue():
    pieces = ["Now", ",", " one", " two", ".", " three", " four", "."]
    assert pair(pieces, min_large_tokens=5).generate("q", GREEDY).stats.switches == 0
    r = pair(pieces, min_large_tokens=2).generate("q", GREEDY)
    assert spans(r)[:2] == [("large", "Now,"), ("small", " one two.")]


def test_small_model_end_of_generation_returns_control_to_the_large_model():
    r = pair(small_eos=[len("We start with the numbers. Now, we add")]).generate("q", GREEDY)
    assert spans(r) == [("large", "We start with the numbers. Now,"), ("small", " we add"),
                        ("large", " 3.5 to it. Then done.")]


def test_budget_counts_both_models():
    r = pair().generate("q", SamplingParams(temperature=0, max_tokens=10))
    assert r.stats.generated_tokens == 10 and r.stats.finish_reason == "length"
    assert spans(r) == [("large", "We start with the numbers. Now,"), ("small", " we add")]


BOXED = ["First", " we", " compute", " the", " sum", ".", " So", " the", " answer", " is", " \\boxed{", "4", "2", "}",
         "."]


@pytest.mark.parametrize("answer_model", ["small", "large"])
def test_reasoning_end_marker_starts_the_answer_stage(answer_model):
    r = pair(BOXED, cues=("nothing",), reasoning_end="\\boxed{", answer_model=answer_model).generate("q", GREEDY)
    assert r.reasoning == "First we compute the sum. So the answer is \\boxed{"
    assert r.answer == "42}."
    assert spans(r) == [("large", r.reasoning), (answer_model, "42}.")] if answer_model == "small" else \
        [("large", r.reasoning + "42}.")]
    assert [s.stage for s in r.segments][-1] == "answer"


def test_budget_exhausted_in_reasoning_appends_the_marker_and_answers_with_the_reserve():
    r = pair(BOXED, cues=("nothing",), reasoning_end="\\boxed{", answer_reserve_tokens=2).generate(
        "q", SamplingParams(temperature=0, max_tokens=6))
    assert r.stats.large.generated_tokens == 4 and r.stats.small.generated_tokens == 2
    assert [s.model for s in r.segments] == ["large", "forced", "small"]
    assert r.segments[1].text == "\\boxed{" and r.stats.forced_tokens >= 1
    assert r.reasoning.endswith("\\boxed{") and r.stats.finish_reason == "length"


def test_stream_deltas_rebuild_the_text_with_attribution_and_switch_events():
    events = list(pair().stream("q", GREEDY))
    result = events[-1].result
    text_events = [e for e in events if e.kind == "text"]
    assert "".join(e.text for e in text_events) == result.text
    by_model = "".join(e.text for e in text_events if e.model == "small")
    assert by_model == " we add 3.5 to it."
    switches = [(e.model, e.cue) for e in events if e.kind == "switch"]
    assert switches == [("small", "Now,"), ("large", None)]
    assert len(text_events) > 5  # streamed as produced, not in one chunk


def test_stop_string_truncates_and_is_never_streamed():
    events = list(pair().stream("q", SamplingParams(temperature=0, max_tokens=100, stop=(" to it",))))
    result = events[-1].result
    assert result.text == "We start with the numbers. Now, we add 3.5"
    assert result.stats.finish_reason == "stop_string"
    assert "".join(e.text for e in events if e.kind == "text") == result.text


def test_multibyte_characters_are_never_broken():
    pieces = ["Now", ",", " caf", b"\xc3", b"\xa9", " and", " —".encode()[:2], " —".encode()[2:], " ok", "."]
    r = pair(pieces, min_large_tokens=0).generate("q", GREEDY)
    assert r.text == "Now, café and — ok." and "\ufffd" not in "".join(s.text for s in r.segments)
    cut = pair(pieces, min_large_tokens=0).generate("q", SamplingParams(temperature=0, max_tokens=4))
    assert cut.text == "Now, caf"  # budget ended inside "é": the partial character is dropped, not garbled


def test_text_handoff_when_vocabularies_differ_gives_the_same_output():
    ids = pair().generate("q", GREEDY)
    engine = pair(small_kw={"extra_vocab": [b" add 3", b"5 to"]})
    text = engine.generate("q", GREEDY)
    assert text.stats.handoff == "text" and spans(text) == spans(ids)
    for backend in (engine.large, engine.small):  # each context holds prompt + the output, in its own tokens
        seen = backend.output_bytes().decode()
        assert seen and seen in text.text and text.text.startswith(seen)


def test_each_backend_evaluates_every_token_once():
    engine = pair()
    r = engine.generate("q", GREEDY)
    for role in ("large", "small"):
        backend, st = getattr(engine, role), getattr(r.stats, role)
        positions = backend.evaluated_positions
        assert positions == list(range(len(positions)))  # contiguous, never re-evaluated
        assert st.evaluated_tokens == len(backend.tokens) <= st.prompt_tokens + r.stats.generated_tokens


def test_second_request_reuses_the_cached_prompt_prefix():
    engine = pair(reuse_prompt_cache=True)
    engine.generate([{"role": "system", "content": "long shared system prompt"}, {"role": "user", "content": "a"}], GREEDY)
    r = engine.generate([{"role": "system", "content": "long shared system prompt"}, {"role": "user", "content": "b"}], GREEDY)
    assert r.stats.large.cached_prompt_tokens == r.stats.large.prompt_tokens - 2  # "b" and the separator differ


def test_mode_large_and_small_are_single_model_baselines():
    assert spans(pair(mode="large").generate("q", GREEDY)) == [("large", "".join(SCRIPT))]
    assert spans(pair(mode="small").generate("q", GREEDY)) == [("small", "".join(SCRIPT))]


@pytest.mark.parametrize("prompt", ["", "   ", [], [{"role": "user"}], [{"content": "x"}], None])
def test_bad_prompts_fail_before_any_model_work(prompt):
    engine = pair()
    with pytest.raises(ConfigError):
        engine.generate(prompt, GREEDY)
    assert engine.large.evaluated_positions == engine.small.evaluated_positions == []


def test_prompt_longer_than_the_context_window():
    engine = pair(large_kw={"n_ctx": 32})
    with pytest.raises(ConfigError, match="context window"):
        engine.generate("x" * 100, GREEDY)
    assert engine.large.evaluated_positions == []


def test_pair_checks():
    with pytest.raises(ConfigError, match="chat formats"):
        pair(small_kw={"template": "llama3"})
    with pytest.raises(ConfigError, match="identical vocabularies"):
        pair(small_kw={"extra_vocab": [b"zz"]}, handoff="ids")
    shared = ScriptedBackend(SCRIPT)
    with pytest.raises(ConfigError, match="two backend instances"):
        RelayEngine(shared, shared, ["Now"])
    with pytest.raises(ConfigError):
        pair(cues=())
    with pytest.raises(ConfigError):
        pair(mode="both")


def test_a_second_request_while_a_stream_is_open_is_refused_and_the_first_is_untouched():
    """Regression: stream() reset both KV caches as soon as it was called, so a second request while a
    first stream was open silently corrupted the first. Now the engine is taken by the stream being read
    and a second request is a clear error until the first ends or is closed."""
    engine = pair()
    alone = engine.generate("add", GREEDY).text
    first = engine.stream("add", GREEDY)
    got = [next(first), next(first)]
    with pytest.raises(ConfigError, match="already running a request"):
        engine.generate("something else", GREEDY)
    rest = list(first)
    assert "".join(e.text for e in got + rest if e.kind == "text") == rest[-1].result.text == alone
    assert engine.generate("add", GREEDY).text == alone  # free again once the stream ended
    unread = engine.stream("add", GREEDY)  # a stream not yet read holds nothing
    assert engine.generate("add", GREEDY).text == alone
    next(unread)
    unread.close()  # closing a stream part-way gives the engine back too
    assert engine.generate("add", GREEDY).text == alone


def test_segment_token_counts_add_up_when_a_character_spans_tokens_at_a_switch():
    """Regression: the small model's first token after a switch held only the first byte of "é", wrote
    no text, and was counted to no segment, so the segments summed to fewer tokens than were written."""
    pieces = ["Now,", b"\xc3", b"\xa9t\xc3\xa9.", " Done", "."]
    r = pair(pieces, cues=("Now,",), min_large_tokens=1).generate("q", GREEDY)
    assert spans(r) == [("large", "Now,"), ("small", "été."), ("large", " Done.")]
    for role in ("large", "small"):
        assert sum(s.tokens for s in r.segments if s.model == role) == getattr(r.stats, role).generated_tokens
    assert [s.tokens for s in r.segments] == [1, 2, 2]


@pytest.mark.parametrize("budget", [3, 6, 8])
def test_a_budget_that_runs_out_in_reasoning_with_no_reserve_appends_nothing(budget):
    """Regression: the budget rule appended the reasoning-end marker although the answer stage got no tokens
    (answer_reserve_tokens 0): `relaygen generate hi --max-tokens 8` ended with `\\boxed{` and its tokens."""
    r = pair(BOXED, cues=("nothing",), reasoning_end="\\boxed{").generate(
        "q", SamplingParams(temperature=0, max_tokens=budget))
    assert r.text == "".join(BOXED[:budget]) and "\\boxed{" not in r.text
    assert r.stats.forced_tokens == 0 and "forced" not in [s.model for s in r.segments]
    assert sum(s.tokens for s in r.segments) == r.stats.generated_tokens == budget
    assert r.answer == "" and r.stats.finish_reason == "length"
