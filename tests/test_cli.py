"""The relaygen command, run as a user runs it (a subprocess), on the real SmolLM2 test model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from busy_cues import ANY_LETTER_FILE

BUSY = ["--profile", str(ANY_LETTER_FILE)]  # every letter is a cue: both models write, on any build


def relaygen(*args, **env):
    return subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


def test_version_and_help():
    assert relaygen("--version").stdout.startswith("relaygen-integrations ")
    out = relaygen("generate", "--help").stdout
    for flag in ("--pair", "--profile", "--cue", "--temperature", "--seed", "--max-tokens", "--stream", "--json"):
        assert flag in out


def test_generate_json_record(smollm2_path):
    p = relaygen("generate", "Why is the sky blue?", "--pair", "smollm2-135m-self", "--temperature", "0",
                 "--max-tokens", "48", "--json", *BUSY)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["text"] == "".join(s["text"] for s in rec["segments"])
    assert {s["model"] for s in rec["segments"]} == {"large", "small"}
    st = rec["stats"]
    assert st["generated_tokens"] == st["large"]["generated_tokens"] + st["small"]["generated_tokens"] <= 48
    assert 0 < st["large_share"] < 1 and st["switches"] >= 1 and st["finish_reason"] in ("stop", "length")


def test_generate_colours_each_models_spans_and_prints_stats(smollm2_path):
    p = relaygen("generate", "Why is the sky blue?", "--pair", "smollm2-135m-self", "--temperature", "0",
                 "--max-tokens", "48", "--stream", *BUSY, FORCE_COLOR="1", COLUMNS="120")
    assert p.returncode == 0, p.stderr
    assert "\x1b[36m" in p.stdout and "\x1b[35m" in p.stdout  # cyan large, magenta small
    assert "relay stats" in p.stdout and "switches" in p.stdout


@pytest.mark.parametrize("args, message", [
    (["   "], "the prompt is empty"),
    (["hi", "--max-tokens", "0"], "max_tokens must be a positive integer"),
    (["hi", "--pair", "nope"], "unknown pair 'nope'"),
    (["hi", "--profile", "/no/such/profile.json"], "no cue profile"),
    (["hi", "--temperature", "-1"], "temperature must be >= 0"),
])
def test_user_mistakes_get_one_clear_line(args, message):
    p = relaygen("generate", *args)
    assert p.returncode == 2 and message in p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_a_flag_for_another_backend_is_an_error_never_dropped():
    """Regression: --threads was silently dropped with --backend openai."""
    p = relaygen("generate", "hi", "--backend", "openai", "--large-url", "http://127.0.0.1:9/v1",
                 "--small-url", "http://127.0.0.1:9/v1", "--threads", "4")
    assert p.returncode == 2 and "--threads: not an option of the openai backend (it is one of llamacpp and hf)" in p.stderr
    zero = relaygen("generate", "hi", "--n-ctx", "0")
    assert zero.returncode == 2 and "n_ctx must be a positive integer, got 0" in zero.stderr


def test_a_truncated_answer_holds_only_what_the_models_wrote_within_max_tokens(smollm2_path):
    """Regression: `relaygen generate hi --max-tokens 8` ended with the reasoning-end marker, appended by the
    budget rule although the answer stage gets no tokens, and returned more tokens than the budget."""
    p = relaygen("generate", "hi", "--pair", "smollm2-135m-self", "--temperature", "0", "--max-tokens", "8",
                 "--reasoning-end", "\\boxed{", "--json", *BUSY)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert "forced" not in {s["model"] for s in rec["segments"]} and rec["stats"]["forced_tokens"] == 0
    assert sum(s["tokens"] for s in rec["segments"]) == rec["summary"]["generated_tokens"] <= 8


def test_demo_solves_one_problem_and_grades_it(smollm2_path):
    p = relaygen("demo", "--pair", "smollm2-135m-self", "--index", "1", "--max-tokens", "24", *BUSY,
                 COLUMNS="120")
    assert p.returncode == 0, p.stderr
    problem = json.loads((Path(__file__).parents[1] / "evals/data/gsm8k_test.jsonl").read_text().splitlines()[1])
    assert f"GSM8K {problem['id']}" in p.stdout and problem["problem"][:40] in p.stdout
    assert "relay stats" in p.stdout
    assert f"reference answer {problem['answer']}: " in p.stdout and p.stdout.rstrip().endswith(("correct", "wrong"))


@pytest.mark.parametrize("mode, silent", [("large", "small"), ("small", "large")])
def test_generate_mode_runs_one_model_alone(smollm2_path, mode, silent):
    p = relaygen("generate", "Why is the sky blue?", "--pair", "smollm2-135m-self", "--temperature", "0",
                 "--max-tokens", "24", "--json", "--mode", mode, *BUSY)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)["stats"]
    assert st[silent]["generated_tokens"] == 0 and st["switches"] == 0
    assert st[mode]["generated_tokens"] == st["generated_tokens"] > 0


def test_generate_speculative_drafts_for_the_large_model(smollm2_path):
    p = relaygen("generate", "Count from one to twenty in words.", "--pair", "smollm2-135m-self", "--temperature",
                 "0", "--max-tokens", "32", "--json", "--mode", "large", "--speculative", "draft", "--draft-max", "4")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)["stats"]
    assert st["large"]["drafted_tokens"] > 0 and st["draft"]["evaluated_tokens"] > 0  # the draft model ran
    assert st["large"]["generated_tokens"] == st["generated_tokens"] > 0


def test_calibrate_writes_a_profile_that_generate_uses(smollm2_path, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": q, "answer": "0"}) + "\n" for i, q in
                            enumerate(["What is 2 + 3?", "A box has 4 red and 5 blue balls. How many balls?"])))
    out = tmp_path / "profile.json"
    words = ["the", "is", "a", "and", "of", "to", "The", "It"]
    p = relaygen("calibrate", "--pair", "smollm2-135m-self", "--data", str(data), "--problems", "2", "--samples", "1",
                 "--max-tokens", "48", "--threshold", "-1", "--min-occurrences", "1", "--threads", "2",
                 "--out", str(out), *[a for w in words for a in ("--cue", w)])
    assert p.returncode == 0, p.stderr
    saved = json.loads(out.read_text())
    assert saved["cues"] and set(saved["cues"]) <= set(words) and saved["data"]["problem_ids"] == ["p0", "p1"]
    assert out.with_suffix(".png").is_file() and out.with_suffix(".traces.jsonl").is_file()
    g = relaygen("generate", "Tell me about the sea and the sky.", "--pair", "smollm2-135m-self", "--temperature",
                 "0", "--max-tokens", "32", "--json", "--profile", str(out))
    assert g.returncode == 0, g.stderr
    assert set(json.loads(g.stdout)["stats"]["cues_fired"]) <= set(saved["cues"])
