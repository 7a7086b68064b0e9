"""`relaygen bench`: a real (tiny) benchmark run through the CLI, resumed, extended and reported,
plus the statistics and the cost model on known inputs."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from relaygen_integrations.bench.costs import UnitCosts, relay_what_if
from relaygen_integrations.bench.methods import parse_methods
from relaygen_integrations.bench.report import _command
from relaygen_integrations.bench.runner import BenchSettings, data_file, read_records, recorded_settings
from relaygen_integrations.math_tasks import box_content
from relaygen_integrations.bench.summary import SMALL_STEP, load_results, sign_test, summarise, wilson
from relaygen_integrations.errors import ConfigError
from busy_cues import ANY_LETTER_FILE

METHODS = "large,small,relay,relay-all,large+draft,relay+lookup,relay+exact,relay+exact+resume=2"
REGISTRY = Path(__file__).resolve().parents[2] / "models" / "registry.toml"


def relaygen(*args, env=None):
    return subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=900)


@pytest.fixture(scope="module")
def boxed_registry(tmp_path_factory, smollm2_path):
    """The project registry plus a SmolLM2 pair whose reasoning ends at ``\\boxed{`` (as the default pair's)
    and whose profile fires on any prose, so its relay switches whatever the model writes."""
    d = tmp_path_factory.mktemp("registry")
    text = REGISTRY.read_text(encoding="utf-8") + (
        '\n[pairs."smollm2-boxed"]\nlarge = "smollm2-135m"\nsmall = "smollm2-135m"\n'
        f'profile = "{ANY_LETTER_FILE}"\nreasoning_end = "\\\\boxed{{"\n')  # every letter a cue: it relays
    (d / "registry.toml").write_text(text, encoding="utf-8")
    return {"RELAYGEN_REGISTRY": str(d / "registry.toml")}


def run_args(out, limit=2, *extra):
    return ["bench", "run", "--pair", "smollm2-boxed", "--data", "gsm8k", "--limit", str(limit), "--methods", METHODS,
            "--max-tokens", "64", "--answer-reserve", "16", "--threads", "2", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, boxed_registry):
    out = tmp_path_factory.mktemp("bench") / "gsm8k.jsonl"
    p = relaygen(*run_args(out), env=boxed_registry)
    assert p.returncode == 0, p.stderr
    return out


def samples_of(path):
    return [r for r in read_records(path) if r["type"] == "sample"]


def test_run_writes_one_graded_record_per_method_and_problem(bench_run):
    records = read_records(bench_run)
    assert [r["type"] for r in records[:2]] == ["run", "costs"]
    assert records[0]["settings"]["max_tokens"] == 64 and records[0]["machine"]["cores"]
    samples = samples_of(bench_run)
    assert sorted((s["index"], s["method"]) for s in samples) == sorted(
        (i, m) for i in (0, 1) for m in METHODS.split(","))
    order = [[s["method"] for s in samples if s["index"] == i] for i in (0, 1)]
    assert order[0] != order[1], "the method order rotates from problem to problem"
    for s in samples:
        assert isinstance(s["correct"], bool) and s["reference"] in ("18", "3")
        assert s["tokens"] == s["large_tokens"] + s["small_tokens"] <= 64
        assert sum(seg[2] for seg in s["segments"] if seg[0] != "forced") == s["tokens"]
        for role in ("large", "small"):  # the call sizes account for every evaluated token
            sizes = s["calls"][role]
            assert sum(int(n) * c for n, c in sizes.items()) == s["models"][role]["evaluated_tokens"]
    by = {(s["method"], s["index"]): s for s in samples}
    assert all(by[("large", i)]["small_tokens"] == 0 and by[("small", i)]["large_tokens"] == 0 for i in (0, 1))
    assert all(by[("relay", i)]["switches"] > 0 for i in (0, 1))
    draft = [by[("large+draft", i)] for i in (0, 1)]
    assert all(d["models"]["large"]["drafted_tokens"] > 0 and d["calls"]["draft"] for d in draft)
    for d in draft:  # every verification batch evaluated exactly the drafted tokens, and kept every row
        assert sum(int(n) * c for n, c in d["row_calls"]["large"].items()) == d["models"]["large"]["drafted_tokens"]
    assert not any(by[(m, i)]["row_calls"]["large"] for m in ("large", "relay", "relay-all") for i in (0, 1))
    assert all(by[("relay+lookup", i)]["models"]["large"]["drafted_tokens"] > 0 for i in (0, 1))
    for i in (0, 1):  # the checked relay vetted every sentence the small model began, and says so
        checked = by[("relay+exact", i)]
        assert checked["sentences_checked"] >= checked["switches"] > 0
        assert checked["small_tokens_discarded"] >= checked["sentences_cut"] == checked["cut_tokens"]
        assert by[("relay", i)]["sentences_checked"] == 0
        resumed = by[("relay+exact+resume=2", i)]  # resumptions are counted (on one model twice, cuts are rare)
        assert 0 <= resumed["resumes"] <= resumed["sentences_cut"] and resumed["resumed_tokens"] >= 0
        assert set(resumed["cues_cut"]) <= set(resumed["cues"])


def test_answer_stage_compares_small_and_large_answers_on_the_same_trace(bench_run):
    large = [s for s in samples_of(bench_run) if s["method"] == "large"]
    for s in large:
        stage = s["answer_stage"]
        assert stage is not None, "the reserve guarantees an answer stage"
        answer = s["text"][s["reasoning_chars"]:]
        assert stage["large"] == box_content(answer)[0]
        if stage["large"].strip() == stage["small"].strip() != "":
            assert stage["agree"]
        if not stage["large"].strip() or not stage["small"].strip():
            assert not stage["agree"]
        assert stage["seconds"] > 0


def test_rerun_skips_done_samples_and_a_larger_limit_adds_only_new_problems(bench_run, boxed_registry, tmp_path):
    out = tmp_path / "resume.jsonl"
    out.write_bytes(bench_run.read_bytes())
    before = read_records(out)
    p = relaygen(*run_args(out), env=boxed_registry)
    assert p.returncode == 0, p.stderr
    assert "already done" in p.stderr and read_records(out) == before
    p = relaygen(*run_args(out, 3, "--no-costs", "--no-agreement"), env=boxed_registry)
    assert p.returncode == 0, p.stderr
    added = read_records(out)[len(before):]
    assert added[0]["type"] == "run" and all(r["type"] == "sample" for r in added[1:])
    assert sorted(r["method"] for r in added[1:]) == sorted(METHODS.split(",")) and {r["index"] for r in added[1:]} == {2}


def test_a_line_cut_by_a_stopped_run_is_answered_again(bench_run, boxed_registry, tmp_path):
    out = tmp_path / "cut.jsonl"
    data = bench_run.read_bytes()
    out.write_bytes(data[: len(data) - 40])  # the last record lost its end
    lost = json.loads(data.splitlines()[-1])
    assert len(samples_of(out)) == len(samples_of(bench_run)) - 1
    p = relaygen(*run_args(out, 2, "--no-costs"), env=boxed_registry)
    assert p.returncode == 0, p.stderr
    again = samples_of(out)
    assert len(again) == len(samples_of(bench_run))
    assert (again[-1]["id"], again[-1]["method"]) == (lost["id"], lost["method"])


def test_a_pause_file_holds_the_run_between_answers(bench_run, boxed_registry, tmp_path):
    import time

    from relaygen_integrations.bench.runner import pause_file

    out = tmp_path / "paused.jsonl"
    out.write_bytes(bench_run.read_bytes())
    pause_file(out).touch()
    ack = out.with_name(out.name + ".paused")
    proc = subprocess.Popen([sys.executable, "-m", "relaygen_integrations.cli", *run_args(out, 3, "--no-costs")],
                            env={**os.environ, **boxed_registry}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not ack.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ack.exists(), "the runner acknowledges the pause"
        time.sleep(1)
        assert len(samples_of(out)) == len(samples_of(bench_run)), "no answer while paused"
        pause_file(out).unlink()
        assert proc.wait(timeout=600) == 0
    finally:
        proc.kill()
    assert not ack.exists() and len(samples_of(out)) == len(samples_of(bench_run)) + len(METHODS.split(","))


def test_samples_at_a_temperature_give_pass_at_1_over_paired_seeds(boxed_registry, tmp_path):
    out = tmp_path / "sampled.jsonl"
    p = relaygen("bench", "run", "--pair", "smollm2-boxed", "--limit", "1", "--methods", "large,relay-all", "--samples", "3",
                 "--temperature", "0.8", "--seed", "5", "--max-tokens", "24", "--no-costs", "--no-agreement",
                 "--threads", "2", "--out", str(out), env=boxed_registry)
    assert p.returncode == 0, p.stderr
    samples = samples_of(out)
    assert sorted((s["method"], s["sample"], s["seed"]) for s in samples) == [
        (m, k, 5 + k) for m in ("large", "relay-all") for k in range(3)]
    large = [s["text"] for s in samples if s["method"] == "large"]
    assert len(set(large)) > 1, "different seeds sample different answers"
    rows = {r.method: r for r in summarise(load_results(out))}
    assert rows["large"].samples == 3 and rows["large"].problems == 1
    assert rows["large"].pass1 == pytest.approx(sum(s["correct"] for s in samples if s["method"] == "large") / 3)


def test_resume_with_other_settings_is_refused(bench_run, boxed_registry, tmp_path):
    out = tmp_path / "other.jsonl"
    out.write_bytes(bench_run.read_bytes())
    p = relaygen(*[a if a != "64" else "32" for a in run_args(out)], env=boxed_registry)
    assert p.returncode == 2 and "other settings" in p.stderr and "max_tokens: 64 -> 32" in p.stderr
    assert "Traceback" not in p.stderr


def test_report_tables_and_plots(bench_run, tmp_path):
    out = tmp_path / "report" / "README.md"
    p = relaygen("bench", "report", str(bench_run), "--out", str(out))
    assert p.returncode == 0, p.stderr
    md = out.read_text()
    for part in ("## Headline", "## GSM8K: 2 problems, greedy, at most 64 tokens", "### Answer stage",
                 "### Cost model: predicted vs measured", "Where the time went", "relaygen bench run --data gsm8k",
                 "Checked relay: relay+exact checked", "Per-cue acceptance: sentences after the cue",
                 "| relay+exact | relay+exact+resume=2 |"):
        assert part in md
    for m in METHODS.split(","):
        assert f"| {m} |" in md
    for png in ("accuracy_vs_speedup.png", "gsm8k_tokens.png", "accuracy_vs_small_share.png"):
        assert (out.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = summarise(load_results(bench_run))
    large = next(r for r in rows if r.method == "large")
    assert large.speedup == 1.0 and large.predicted_speedup == pytest.approx(1.0)
    assert all(r.predicted_model_s > 0 and r.measured_model_s > 0 for r in rows)


def test_two_runs_of_one_data_set_get_their_own_headings_and_token_strips(bench_run, tmp_path):
    # regression: bench_check/gsm8k.jsonl and bench_resume/gsm8k.jsonl in one report wrote one gsm8k_tokens.png,
    # the later run's strip shown under both runs' identical headings
    runs = []
    for folder in ("earlier", "later"):
        (tmp_path / folder).mkdir()
        runs.append(tmp_path / folder / "gsm8k.jsonl")
        runs[-1].write_bytes(bench_run.read_bytes())
    out = tmp_path / "report" / "README.md"
    p = relaygen("bench", "report", *map(str, runs), "--out", str(out))
    assert p.returncode == 0, p.stderr
    md = out.read_text()
    for folder in ("earlier", "later"):
        assert f"## GSM8K ({folder}): 2 problems" in md
        assert f"![who wrote which tokens]({folder}_gsm8k_tokens.png)" in md
        assert (out.parent / f"{folder}_gsm8k_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out.parent / "gsm8k_tokens.png").exists()


def test_the_frontier_compares_methods_on_the_problems_they_all_answered(bench_run):
    from dataclasses import replace

    from relaygen_integrations.bench.figures import on_common_problems

    res = load_results(bench_run)
    first = res.samples[0]["id"]  # one method answered one problem fewer (a sweep over a shorter slice)
    fewer = [s for s in res.samples if not (s["method"] == "relay" and s["id"] != first)]
    rows = on_common_problems(replace(res, samples=fewer))
    assert {r.problems for r in rows} == {1} and len(rows) == len(res.methods)


def test_the_frontier_puts_two_runs_of_one_data_set_on_the_same_problems(tmp_path):
    # regression: an earlier run's sweep over 50 problems was plotted beside a later run's 29 as if comparable
    from relaygen_integrations.bench.figures import accuracy_vs_small_share_figure, short_method

    runs = []
    for folder, method, ids in (("first", "relay+check", "123"), ("later", "relay:x/y/prof.json+check+resume", "12")):
        run = {"type": "run", "settings": {"methods": f"large,{method}", "dataset": "gsm8k"}, "machine": {}}
        recs = [run] + [_sample(m, i, 1.0, True, 8, 2 * (m != "large")) for i in ids for m in ("large", method)]
        path = tmp_path / folder / "gsm8k.jsonl"
        path.parent.mkdir()
        path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
        runs.append(load_results(path))
    fig = accuracy_vs_small_share_figure(runs)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert len(labels) == 4 and all("n=2)" in label for label in labels)
    assert "relay:prof+check+resume (GSM8K (later), n=2)" in labels
    assert short_method("relay:paper-qwen3+draft") == "relay:paper-qwen3+draft"


def test_check_paired_pairs_a_method_with_one_from_another_run(tmp_path, capsys):
    """evals/check_paired.py --other-results: right only here / only there across two runs of one protocol."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_paired", Path(__file__).parents[2] / "evals/check_paired.py")
    check_paired = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_paired)
    paths = []
    for folder, method, right in (("old", "relay+check", "10"), ("new", "relay+check+resume", "01")):
        run = {"type": "run", "settings": {"methods": f"large,{method}", "dataset": "gsm8k"}, "machine": {}}
        recs = [run]
        for pid, ok in zip("12", right):
            recs += [{**_sample("large", pid, 1.0, True), "text": f"large {pid}"},
                     {**_sample(method, pid, 1.0, ok == "1"), "text": f"{method} {pid}"}]
        paths.append(tmp_path / f"{folder}.jsonl")
        paths[-1].write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert check_paired.main([str(paths[1]), "relay+check+resume", "relay+check", "--other-results", str(paths[0])]) == 0
    out = capsys.readouterr().out
    assert "large in both runs: 2 of 2 texts identical" in out
    assert "on 2 answers: right only in relay+check+resume 1, only in relay+check 1" in out
    assert check_paired.main([str(paths[1]), "relay+check+resume", "relay+check"]) == 2  # not in this file


@pytest.mark.parametrize("args, message", [
    (["--data", "gsm9k"], "unknown data set 'gsm9k'"),
    (["--methods", "large,relay+magic"], "after '+' comes draft, lookup, check, exact, tau=P or resume"),
    (["--methods", "large,large+exact"], "a check vets the small model's sentences in a relay"),
    (["--methods", "large,relay+tau=2"], "tau must be a probability in (0, 1)"),
    (["--methods", "relay"], "must include 'large'"),
    (["--methods", "large,small+draft"], "speculation speeds up the large model"),
    (["--samples", "2"], "needs --temperature > 0"),
    (["--backend", "openai", "--methods", "large,large+draft"], "run in process: use the llamacpp or hf backend"),
    (["--dtype", "bfloat16"], "--dtype: not an option of the llamacpp backend (it is one of hf)"),
])
def test_user_mistakes_get_one_clear_line(args, message, tmp_path):
    p = relaygen("bench", "run", "--limit", "1", "--out", str(tmp_path / "x.jsonl"), *args)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


def test_costs_command_predicts_relay_speedups(smollm2_path):
    p = relaygen("bench", "costs", "--pair", "smollm2-135m-self", "--threads", "2")
    assert p.returncode == 0, p.stderr
    assert "cost of one evaluation call" in p.stdout and "predicted relay speedup" in p.stdout
    assert "decode cost ratio small/large" in p.stdout


# --- statistics and the cost model on known inputs ----------------------------------------------

def test_wilson_interval_and_sign_test():
    assert wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson(0, 10)[0] == 0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert sign_test(5, 0) == pytest.approx(0.0625) and sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0


def _sample(method, pid, wall, correct, large=10, small=0):
    return {"type": "sample", "id": pid, "index": int(pid), "method": method, "sample": 0, "wall_s": wall,
            "correct": correct, "tokens": large + small, "large_tokens": large, "small_tokens": small, "switches": 1,
            "finish": "stop", "models": {"large": {"drafted_tokens": 0, "accepted_draft_tokens": 0, "seconds": wall},
                                         "small": {"seconds": 0}}, "calls": {"large": {"1": 10}}, "row_calls": {},
            "first_call": {"large": 1}}


def test_speedup_is_the_ratio_of_total_times_and_pairs_count_each_way(tmp_path):
    run = {"type": "run", "settings": {"methods": "large,relay", "dataset": "gsm8k"}, "machine": {}}
    recs = [run, _sample("large", "1", 10, True), _sample("relay", "1", 5, False, 6, 4),
            _sample("large", "2", 30, False), _sample("relay", "2", 30, True, 6, 4),
            _sample("large", "3", 10, True), _sample("relay", "3", 10, False, 6, 4)]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    relay = next(r for r in summarise(load_results(path)) if r.method == "relay")
    assert relay.speedup == pytest.approx(50 / 45)  # totals, not the mean of per-problem ratios (1.33)
    assert (relay.only_this, relay.only_large) == (1, 2) and relay.pass1 == pytest.approx(1 / 3)
    assert relay.large_share == pytest.approx(0.6) and relay.per_problem_speedup[1] == pytest.approx(1.0)


def test_report_command_covers_every_invocation_of_a_resumed_run(tmp_path):
    # regression: the report showed the first invocation's --limit and methods after a run was extended
    settings = {"dataset": "gsm8k", "start": 0, "max_tokens": 64, "temperature": 0.0, "backend_options": {}}
    recs = [{"type": "run", "settings": {**settings, "methods": "large", "limit": 1}},
            _sample("large", "0", 10, True),
            {"type": "run", "settings": {**settings, "methods": "large,relay", "limit": 2}},
            _sample("relay", "0", 10, True), _sample("large", "1", 10, True), _sample("relay", "1", 10, True)]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    command = _command(load_results(path))
    assert "--methods large,relay --limit 2 --max-tokens 64" in command


def _costs(decode):
    one = {"sizes": [1, 4], "seconds": [decode, 4 * decode], "row_sizes": [1, 4], "row_seconds": [decode, 4 * decode]}
    return {"type": "costs", "large": one, "small": one}


def test_each_answer_is_priced_with_its_own_invocations_costs(tmp_path):
    # regression: a run resumed on a host 3x faster was priced with the median of all invocations' costs
    run = {"type": "run", "settings": {"methods": "large,relay", "dataset": "gsm8k"}, "machine": {}}
    recs = [run, _costs(0.03), _sample("large", "1", 0.3, True), _sample("relay", "1", 0.3, True),
            run, _costs(0.01), _sample("large", "2", 0.1, True), _sample("relay", "2", 0.1, True),
            run, _costs(0.01), _sample("large", "3", 0.1, True), _sample("relay", "3", 0.1, True)]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    results = load_results(path)
    large = next(r for r in summarise(results) if r.method == "large")
    assert large.predicted_model_s == pytest.approx(10 * 0.03 + 2 * 10 * 0.01)  # medians would give 0.3
    subset = replace(results, samples=[s for s in results.samples if s["id"] != "3"])  # as the frontier does
    assert next(r for r in summarise(subset) if r.method == "large").predicted_model_s == pytest.approx(0.4)


def test_memory_bound_what_ifs_price_calls_by_count_and_the_small_step(tmp_path):
    """A call of up to 64 tokens costs one decode step; the second what-if puts every small-model call at
    SMALL_STEP of a large step (a pair whose small model is much smaller than this machine's)."""
    run = {"type": "run", "settings": {"methods": "large,relay", "dataset": "gsm8k"}, "machine": {}}
    costs = {"type": "costs", "large": {"sizes": [1, 64, 256], "seconds": [0.06, 1.2, 4.8]},
             "small": {"sizes": [1, 64, 256], "seconds": [0.03, 0.6, 2.4]}}
    large, relay = _sample("large", "1", 1.0, True, 20), _sample("relay", "1", 1.0, True, 10, 10)
    relay["calls"] = {"large": {"1": 10, "12": 1}, "small": {"1": 10, "128": 1}}  # 128 tokens: two steps
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [run, costs, large, relay]) + "\n")
    row = next(r for r in summarise(load_results(path)) if r.method == "relay")
    assert row.memory_bound_speedup == pytest.approx(10 * 0.06 / (11 * 0.06 + 12 * 0.03))
    assert row.cheap_small_speedup == pytest.approx(10 / (11 + 12 * SMALL_STEP))
    assert row.cheap_small_speedup > row.memory_bound_speedup


def test_unit_costs_price_calls_by_size():
    c = UnitCosts([1, 4, 16], [0.01, 0.02, 0.08])
    assert c.call(1) == 0.01 and c.call(10) == pytest.approx(0.05) and c.call(32) == pytest.approx(0.16)
    assert c.predict({"1": 3, 16: 1}) == pytest.approx(0.11)
    verify = UnitCosts([1, 4, 16], [0.01, 0.02, 0.08], [1, 4], [0.012, 0.03])
    assert verify.predict({1: 3, 4: 2}, {4: 1}) == pytest.approx(0.03 + 0.02 + 0.03)  # one of the 4s kept every row


def test_relay_what_if_follows_decode_and_hand_off_costs():
    free = UnitCosts([1, 256], [0.01, 0.01])  # memory-bound: a batch costs one decode step
    cheap_small = UnitCosts([1, 256], [0.002, 0.002])
    assert relay_what_if(free, cheap_small, 1.0) == 1.0
    assert relay_what_if(free, cheap_small, 0.7) > 1.2  # the GPU picture: most of the small share is saved
    linear_large = UnitCosts([1, 256], [0.01, 2.56])  # CPU: a batch costs as much as decoding it
    assert relay_what_if(linear_large, UnitCosts([1, 256], [0.006, 1.5]), 0.8) < 1.0


def test_method_names_and_data_sets():
    names = [(m.name, m.mode, m.profile, m.speculative) for m in parse_methods("large, relay-all,relay:paper-qwen3+draft")]
    assert names == [("large", "large", None, "off"), ("relay-all", "relay", "all-candidates", "off"),
                     ("relay:paper-qwen3+draft", "relay", "paper-qwen3", "draft")]
    with pytest.raises(ConfigError, match="listed twice"):
        parse_methods("large,large")
    assert parse_methods("large,relay+tau=0.01")[1].check == "tau=0.01"
    combined = parse_methods("large,relay+check+resume=2,relay:paper-qwen3+exact+resume,relay+resume=1+tau=0.1")[1:]
    assert [(m.profile, m.check, m.resume) for m in combined] == [(None, "check", 2), ("paper-qwen3", "exact", 3),
                                                                 (None, "tau=0.1", 1)]
    for bad, message in (("relay+tau=2", "probability"), ("large+exact", "in a relay"), ("relay+often", "comes draft, lookup"),
                         ("relay+tau=0.01+handback=0.4", "comes draft, lookup, check, exact, tau=P or resume"),
                         ("relay+check+exact", "one check option at most"), ("relay+resume=2", "add \\+check"),
                         ("relay+exact+resume=0", "1 or more"), ("relay+exact+resume=x", "whole number"),
                         ("relay+draft+lookup", "one speculation option")):
        with pytest.raises(ConfigError, match=message):
            parse_methods("large," + bad)
    assert data_file("math500").name == "math500.jsonl"


def test_a_servers_api_key_is_not_written_into_the_results():
    settings = BenchSettings(backend="openai", backend_options={"api_key": "sk-secret", "chat_template": None})
    recorded = recorded_settings(settings, data_file("gsm8k"))
    assert "sk-secret" not in json.dumps(recorded) and recorded["backend_options"]["api_key"] == "<set>"
    assert recorded["dataset"] == "gsm8k"


def test_box_content_reads_the_box_the_marker_opened():
    assert box_content("\\frac{1}{2}} and later \\boxed{3}") == ("\\frac{1}{2}", True)
    assert box_content("12") == ("12", False)


@pytest.mark.parametrize("make_figure", ["accuracy_vs_speedup_figure", "accuracy_vs_small_share_figure"])
def test_plot_legends_do_not_hide_points(bench_run, make_figure):
    """Regression: the legend sat inside the axes and covered the GSM8K points of the committed frontier plot."""
    import matplotlib.pyplot as plt

    from relaygen_integrations.bench import figures

    fig = getattr(figures, make_figure)([load_results(bench_run)])
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, plot_area = ax.get_legend().get_window_extent(), ax.get_window_extent()
    plt.close(fig)
    assert len(ax.get_legend().get_texts()) == len(METHODS.split(","))
    assert legend.x0 >= plot_area.x1  # entirely right of the plotting area


def test_report_records_a_command_that_reproduces_its_title(bench_run, tmp_path):
    """Regression: a report made with --title recorded a command without it, which rewrote the file's title."""
    import re
    import shlex

    out = tmp_path / "r" / "README.md"
    assert relaygen("bench", "report", str(bench_run), "--out", str(out), "--title", "Checked: 'A/B' run").returncode == 0
    first = out.read_text()
    command = re.search(r"Generated by `relaygen (.*?)`\.", first).group(1)
    out.unlink()
    assert relaygen(*shlex.split(command)).returncode == 0
    assert out.read_text().splitlines()[0] == first.splitlines()[0] == "# Checked: 'A/B' run"


def test_run_reads_a_data_file_from_start(boxed_registry, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(4)))
    out = tmp_path / "mine-results.jsonl"
    p = relaygen("bench", "run", "--pair", "smollm2-boxed", "--data", str(data), "--start", "1", "--limit", "2",
                 "--methods", "large", "--max-tokens", "16", "--threads", "2", "--no-costs", "--no-agreement",
                 "--out", str(out), env=boxed_registry)
    assert p.returncode == 0, p.stderr
    samples = samples_of(out)
    assert sorted((r["index"], r["id"]) for r in samples) == [(1, "q1"), (2, "q2")]
    assert {r["reference"] for r in samples} == {"2", "4"}


def test_a_report_over_two_runs_of_one_data_set_names_each_by_its_folder(bench_run, tmp_path):
    from relaygen_integrations.bench.report import write_report

    paths = []
    for folder in ("bench_check", "bench_resume"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "gsm8k.jsonl")
        paths[-1].write_bytes(bench_run.read_bytes())
    md = write_report(paths, tmp_path / "report" / "README.md").read_text()
    assert "| method | GSM8K (bench_check) pass@1 % | GSM8K (bench_check) speedup | GSM8K (bench_resume) pass@1 %" in md
    assert (tmp_path / "report" / "accuracy_vs_small_share.png").exists()  # relay+exact+resume=2 is checked
