"""The relaygen command, run as a user runs it (a subprocess), on the real SmolLM2 test model."""

import json
import os
import subprocess
import sys

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
