"""The relaygen_* lm-eval tasks: they load offline from the vendored files, and the grader accepts
every reference answer of every data set (so no gold answer is ungradable)."""

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
pytest.importorskip("math_verify", reason="the lm-eval extra is not installed")

REPO = Path(__file__).resolve().parents[2]
TASKS = {"relaygen_gsm8k_cot": "gsm8k_test", "relaygen_math500": "math500", "relaygen_aime2024": "aime2024",
         "relaygen_aime2025": "aime2025", "relaygen_amc2023": "amc23"}


@pytest.fixture(scope="module")
def tasks():
    from lm_eval.tasks import TaskManager

    loaded = TaskManager(include_path=str(REPO / "evals" / "tasks")).load(["relaygen_math"])
    assert [str(g).split("::")[-1] for g in loaded["groups"]] == ["relaygen_math"]
    return {name.split("::")[-1]: task for name, task in loaded["tasks"].items()}  # 0.5 names them group::task


def test_every_task_loads_its_whole_vendored_file_offline_and_grades_its_references(tasks):
    found = tasks
    assert set(found) == set(TASKS)
    for name, task in found.items():
        rows = [json.loads(line) for line in (REPO / "evals" / "data" / f"{TASKS[name]}.jsonl").open()]
        docs = list(task.test_docs())
        assert [d["id"] for d in docs] == [r["id"] for r in rows], name
        prompt = task.doc_to_text(docs[0])
        assert prompt.startswith(rows[0]["problem"]) and "\\boxed{}" in prompt
        failures = [d["id"] for d in docs
                    if task.process_results(d, [f"So the answer is $\\boxed{{{d['answer']}}}$."])["exact_match"] != 1.0]
        assert not failures, f"{name}: the grader rejects its own reference answers for {failures[:5]}"
        wrong = task.process_results(docs[0], ["\\boxed{\\text{no idea}}"])
        assert wrong["exact_match"] == 0.0


def test_generation_settings(tasks):
    found = tasks
    assert found["relaygen_gsm8k_cot"].config.generation_kwargs["max_gen_toks"] == 512
    assert found["relaygen_math500"].config.generation_kwargs["max_gen_toks"] == 2048
    assert all(t.config.generation_kwargs["do_sample"] is False for t in found.values())
