"""`relaygen bench concurrency`: a real (tiny) sweep through the CLI, in process and over two local servers;
its summary on known inputs; and `bench run` over servers (the URLs used to be dropped on the way)."""

import json

import pytest

from relaygen_integrations.bench.concurrency import SweepSettings, summarise
from relaygen_integrations.bench.runner import read_records
from relaygen_integrations.errors import ConfigError
from busy_cues import ANY_LETTER_FILE
from test_bench import relaygen

RELAY = f"relay:{ANY_LETTER_FILE}"  # every letter a cue: the relay switches whatever SmolLM2 writes
SWEEP = ["bench", "concurrency", "--pair", "smollm2-135m-self", "--methods", f"large,{RELAY}", "--levels", "1", "2",
         "--requests", "2", "--max-tokens", "12", "--repeats", "2"]


def runs_of(report):
    lines = report.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def check_sweep(report, stdout):
    settings, runs = runs_of(report)
    assert settings["type"] == "settings" and settings["levels"] == [1, 2]
    assert sorted((r["repeat"], r["method"], r["level"]) for r in runs) == sorted(
        (k, m, n) for k in (0, 1) for m in ("large", RELAY) for n in (1, 2))
    first = [(r["method"], r["level"]) for r in runs if r["repeat"] == 0]
    assert first[::-1] == [(r["method"], r["level"]) for r in runs if r["repeat"] == 1], "repeats alternate the order"
    for r in runs:
        assert [a["id"] for a in r["answers"]] == ["gsm8k-test-0000", "gsm8k-test-0001"] and r["right"] == sum(a["correct"] for a in r["answers"])
        assert all(0 <= a["tokens"] <= 12 for a in r["answers"])
        assert r["tokens"] == sum(a["tokens"] for a in r["answers"]) and r["throughput"] >= 0
        for a in r["answers"]:  # each method ran with its own settings on the shared sequences
            assert a["small_tokens"] == 0 if r["method"] == "large" else a["small_tokens"] > 0 or a["finish"] != "length"
    table = [line for line in report.read_text(encoding="utf-8").splitlines()
             if line.startswith("| large |") or line.startswith(f"| {RELAY} |")]
    assert len(table) == 4 and all(" 1 | " in line and "1.00x (1.00-1.00)" in line for line in table[::2])
    assert "bench concurrency" in report.read_text(encoding="utf-8") and f"| {RELAY} | 2 |" in stdout
    return runs


def test_sweep_in_process_batches_the_requests_in_flight(tmp_path, smollm2_path):
    p = relaygen(*SWEEP, "--threads", "2", "--out", str(tmp_path / "sweep.md"))
    assert p.returncode == 0, p.stderr
    runs = check_sweep(tmp_path / "sweep.md", p.stdout)
    for r in runs:  # every model call is counted; one request at a time is one sequence a call
        assert r["sequences_per_call"] == 1.0 if r["level"] == 1 else 1.0 <= r["sequences_per_call"] <= 2.0
        assert 0 < r["models_busy"] <= 1


def test_sweep_over_two_servers(tmp_path, smollm2_servers):
    large, small = smollm2_servers
    p = relaygen(*SWEEP, "--backend", "openai", "--large-url", large, "--small-url", small, "--api-key", "sk-x",
                 "--out", str(tmp_path / "sweep.md"))
    assert p.returncode == 0, p.stderr
    runs = check_sweep(tmp_path / "sweep.md", p.stdout)
    assert all(r["sequences_per_call"] is None and r["models_busy"] is None for r in runs)  # the servers' business
    assert "sk-x" not in (tmp_path / "sweep.jsonl").read_text(encoding="utf-8")


def test_bench_run_over_two_servers_reaches_them(tmp_path, smollm2_servers):
    # regression: `bench run --backend openai --large-url ... --small-url ...` dropped the URLs and refused
    large, small = smollm2_servers
    out = tmp_path / "r.jsonl"
    p = relaygen("bench", "run", "--pair", "smollm2-135m-self", "--backend", "openai", "--large-url", large,
                 "--small-url", small, "--methods", "large,relay", "--limit", "1", "--max-tokens", "8",
                 "--no-agreement", "--out", str(out))
    assert p.returncode == 0, p.stderr
    samples = [r for r in read_records(out) if r["type"] == "sample"]
    assert sorted(s["method"] for s in samples) == ["large", "relay"]
    assert all(s["finish"] in ("stop", "length") for s in samples)


@pytest.mark.parametrize("args, message", [
    (["--levels", "2", "4"], "--levels must include 1"),
    (["--levels", "1", "4", "--requests", "2"], "fewer than the highest level (4)"),
    (["--levels", "0", "1"], "from 1 to 256"),
    (["--methods", "large+draft"], "not combined with batched requests yet"),
    (["--methods", "relay+magic"], "after '+' comes draft, lookup, check, exact, tau=P or resume"),
    (["--backend", "hf", "--levels", "1", "2"], "one request at a time: --levels 1 only"),
    (["--backend", "openai"], "needs the two servers' URLs"),
    (["--repeats", "0"], "--repeats and --max-tokens must be at least 1"),
])
def test_sweep_mistakes_get_one_clear_line(args, message, tmp_path):
    p = relaygen("bench", "concurrency", "--out", str(tmp_path / "x.md"), *args)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


def test_methods_need_not_include_large_in_a_sweep():
    assert SweepSettings(methods="relay+check", levels=(1,), requests=1).validated().levels == (1,)
    with pytest.raises(ConfigError, match="must include 'large'"):
        from relaygen_integrations.bench.methods import parse_methods

        parse_methods("relay")


def test_summary_ratios_are_to_level_1_of_the_same_method_and_repeat():
    def run(repeat, level, throughput, texts):
        answers = [{"text": t, "tokens": 10, "small_tokens": 2} for t in texts]
        return {"repeat": repeat, "method": "relay", "level": level, "throughput": throughput, "right": 1,
                "latency_p50": 1.0, "sequences_per_call": level * 0.9, "answers": answers}

    rows = [run(0, 1, 10.0, "ab"), run(0, 4, 15.0, "ax"), run(1, 1, 5.0, "ab"), run(1, 4, 8.0, "ab")]
    four = next(s for s in summarise(rows) if s["level"] == 4)
    assert (four["ratio_min"], four["ratio_max"]) == (1.5, 1.6) and four["ratio"] == pytest.approx(1.55)
    assert four["same_as_level_1"] == [1, 2] and four["throughput"] == pytest.approx(11.5)
    assert four["sequences_per_call"] == pytest.approx(3.6) and four["small_share"] == pytest.approx(0.2)
