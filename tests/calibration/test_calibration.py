"""Cue calibration: margins, the selection rule, resumable traces, and the profile round trip."""

import json

import llama_cpp
import numpy as np
import pytest

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine, SamplingParams, load_profile
from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.calibration.margins import TraceMargins, char_offsets, teacher_force
from relaygen_integrations.calibration.run import calibrate
from relaygen_integrations.calibration.table import cue_table, select_cues
from relaygen_integrations.calibration.traces import generate_traces, load_traces
from relaygen_integrations.core.sampling import probability_margin

WORDS = ["the", "is", "a", "and", "of", "to", "The", "It"]


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return LlamaCppBackend(tiny_models["a"], n_ctx=512, n_threads=2, n_batch=64, chat_format="raw")


def test_batched_margins_equal_a_direct_computation_from_the_logits(tiny, tiny_models):
    ids = tiny.tokenize(("the cat sat on a mat and then it ran away. " * 4).encode())
    margins = tiny.position_margins(ids, first=10, chunk=48)  # chunks that split prompt and trace
    direct = llama_cpp.Llama(str(tiny_models["a"]), n_ctx=512, n_batch=48, logits_all=True, verbose=False)
    direct.eval(ids)
    logits = direct.scores[9:len(ids) - 1].astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = np.sort(p, axis=1)
    np.testing.assert_allclose(margins, top[:, -1] - top[:, -2], atol=1e-5)
    assert len(margins) == len(ids) - 10
    # token-by-token decoding agrees (up to batch rounding)
    tiny.reset()
    one_by_one = [(tiny.sync(ids[:i]), probability_margin(tiny.logits()))[1] for i in range(10, len(ids))]
    np.testing.assert_allclose(one_by_one, margins, atol=5e-3)


def test_char_offsets_handle_multibyte_characters():
    text = "é = 3.5 — ok"
    pieces = [b"\xc3", b"\xa9 =", b" 3", b".5", b" \xe2\x80", b"\x94", b" ok"]
    assert char_offsets(text, pieces).tolist() == [0, 0, 3, 5, 7, 8, 9]
    with pytest.raises(ConfigError):
        char_offsets(text, [b"nope"])


def synthetic(text: str, high_after: str, high=0.9, low=0.5) -> TraceMargins:
    """One token per character; the characters of the segment after ``high_after`` get a high margin."""
    margins = np.full(len(text), low)
    i = text.index(high_after) + len(high_after)
    while i < len(text) and text[i] not in ".":
        margins[i] = high
        i += 1
    return TraceMargins(text, np.arange(len(text)), margins)


def test_selection_rule_on_a_synthetic_margin_table():
    traces = [synthetic("We start. Now we add it. Then stop. Again, fine.", "Now")] * 3
    rows, overall = cue_table(traces, ["Now", "Then", "Again,", "Otherwise", "now"])
    by = {r.cue: r for r in rows}
    assert by["Now"].occurrences == 3 and by["Now"].segments == 3
    assert by["Now"].tokens == 3 * len(" we add it")
    assert by["Now"].mean == pytest.approx(0.9) and by["Now"].delta > 0.3
    assert by["Then"].delta < 0 and by["Otherwise"].occurrences == 0 and by["now"].occurrences == 0
    assert overall == pytest.approx(np.concatenate([t.margins for t in traces]).mean())
    assert select_cues(rows, threshold=0.0, min_occurrences=3) == ["Now"]
    assert select_cues(rows, threshold=0.0, min_occurrences=4) == []  # too rare
    assert by["Now"].selected is False  # the last call re-marked the table


def test_traces_without_any_candidate_cue_are_a_clear_error():
    with pytest.raises(ConfigError, match="no candidate cue"):
        cue_table([synthetic("plain words only. more words.", "plain")], ["Therefore", "Thus,"])


@pytest.fixture(scope="module")
def smol_engine(smollm2_path):
    large = LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2)
    small = LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2)
    return RelayEngine(large, small, WORDS, RelayConfig(mode="large"))


PROBLEMS = [{"id": f"p{i}", "problem": q, "answer": "0"} for i, q in
            enumerate(["What is 2 + 3?", "A box has 4 red and 5 blue balls. How many balls?"])]
PARAMS = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_tokens=24).validated()


def test_traces_resume_after_an_interruption(smol_engine, tmp_path):
    full = generate_traces(smol_engine, PROBLEMS, 2, 7, PARAMS, tmp_path / "full.jsonl", "smol")
    path = tmp_path / "cut.jsonl"
    made = []

    def stop_after_three(rec, reused):
        made.append(reused)
        if len(made) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_traces(smol_engine, PROBLEMS, 2, 7, PARAMS, path, "smol", on_trace=stop_after_three)
    with open(path, "a") as f:
        f.write('{"id": "p1", "sample": 1, "tra')  # a line cut by the interruption
    assert len(load_traces(path)) == 3
    made.clear()
    resumed = generate_traces(smol_engine, PROBLEMS, 2, 7, PARAMS, path, "smol", on_trace=lambda r, reused: made.append(reused))
    assert made == [True, True, True, False]  # only the missing trace was generated
    assert [r["trace"] for r in resumed] == [r["trace"] for r in full]  # per-sample seeds: same traces
    other = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_tokens=12).validated()
    made.clear()
    generate_traces(smol_engine, PROBLEMS[:1], 1, 7, other, path, "smol", on_trace=lambda r, reused: made.append(reused))
    assert made == [False]  # different settings: stored traces are not reused


def test_calibration_profile_round_trips_into_the_runtime(smol_engine, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    out = tmp_path / "smol-profile.json"
    profile = calibrate(smol_engine, data=data, out=out, problems=2, samples=2, seed=1, params=PARAMS,
                        candidates=WORDS, threshold=-1.0, min_occurrences=1, progress=False,
                        models={"large": {"name": "smollm2-135m"}, "small": {"name": "smollm2-135m"}})
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(profile))
    assert saved["cues"] and set(saved["cues"]) <= set(WORDS)
    assert {r["cue"] for r in saved["table"]} == set(WORDS)
    assert saved["data"]["problem_ids"] == ["p0", "p1"] and saved["cost"]["trace_tokens"] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check = saved["check"]  # the checked relay's threshold, from the large model's own traces
    assert check["scored_tokens"] > 0 and check["quantile"] == 0.01 and "quantile" in check["rule"]
    assert (check["tau"] is None and "too few" in check["why"]) or 0 < check["tau"] < 1
    loaded = load_profile(out)
    assert loaded.cues == tuple(saved["cues"]) and loaded.name == "smol-profile" and loaded.check_tau == check["tau"]
    few = calibrate(smol_engine, data=data, out=tmp_path / "q.json", problems=2, samples=2, seed=1, params=PARAMS,
                    candidates=WORDS, threshold=-1.0, min_occurrences=1, progress=False, plot=False,
                    check_quantile=0.2)
    assert 0 < few["check"]["tau"] < 1 and load_profile(tmp_path / "q.json").check_tau == few["check"]["tau"]
    relay = RelayEngine(smol_engine.large, smol_engine.small, loaded)
    cue = saved["cues"][0]  # the runtime matcher fires on the saved cues (whatever the model writes)
    assert relay.matcher.fired(f"x {cue} y", 0).cue == cue
    r = relay.generate("Tell me about the sea and the sky.", SamplingParams(temperature=0, max_tokens=60))
    assert set(r.stats.cues_fired) <= set(saved["cues"])
    # a failed rerun (nothing passes the selection) leaves the good profile untouched
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="not written"):
        calibrate(smol_engine, data=data, out=out, problems=2, samples=2, seed=1, params=PARAMS,
                  candidates=WORDS, threshold=5.0, progress=False, plot=False)
    assert out.read_bytes() == before


def test_bad_calibration_inputs_fail_before_model_work(smol_engine, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"id": "x", "problem": "2+2?"}\n')
    cached = list(smol_engine.large.tokens)  # a KV cache that changed would mean model work
    with pytest.raises(ConfigError, match="lacks field"):
        calibrate(smol_engine, data=data, out=tmp_path / "p.json", progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        calibrate(smol_engine, data=data, out=tmp_path / "missing-dir" / "p.json", progress=False)
    with pytest.raises(ConfigError, match="data file not found"):
        calibrate(smol_engine, data=tmp_path / "nope.jsonl", out=tmp_path / "p.json", progress=False)
    with pytest.raises(ConfigError, match=r"quantile must be in \(0, 0.5\), got 0.7"):
        calibrate(smol_engine, data=data, out=tmp_path / "p.json", progress=False, check_quantile=0.7)
    assert smol_engine.large.tokens == cached


def test_a_bad_check_quantile_on_the_command_line_is_one_line_before_models_load(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", "calibrate", "--data", "gsm8k",
                        "--out", str(tmp_path / "p.json"), "--check-quantile", "0.7"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip() == "relaygen: error: the check threshold's quantile must be in (0, 0.5), got 0.7"


def test_registry_pair_can_name_a_profile_file_beside_the_registry(smollm2_path, tmp_path, monkeypatch):
    from relaygen_integrations import load_pair

    monkeypatch.setenv("RELAYGEN_HOME", str(smollm2_path.parent.parent))
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.json").write_text(json.dumps({"name": "mine", "cues": ["Hence", "So,"]}))
    reg = tmp_path / "registry.toml"
    reg.write_text(f'''
[models.smol]
file = "{smollm2_path.name}"
chat_format = "chatml"
[pairs.p]
large = "smol"
small = "smol"
profile = "profiles/mine.json"
''')
    engine = load_pair("p", registry_path=reg, n_ctx=256, n_threads=1)
    assert engine.profile.cues == ("Hence", "So,") and engine.profile.name == "mine"
