"""Data loading, prompts and grading for the relaygen_* lm-eval tasks: vendored files, no network."""

import json
from pathlib import Path

from relaygen_integrations.math_tasks import answers_match, math_prompt

DATA = Path(__file__).resolve().parents[2] / "data"


def _load(name: str) -> dict:
    import datasets

    with open(DATA / f"{name}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows = [{"id": r["id"], "problem": r["problem"], "answer": r["answer"]} for r in rows]
    return {"test": datasets.Dataset.from_list(rows)}


# lm-eval passes --metadata and the model arguments to custom_dataset: ignored here.
def gsm8k(**_):
    return _load("gsm8k_test")


def math500(**_):
    return _load("math500")


def aime2024(**_):
    return _load("aime2024")


def aime2025(**_):
    return _load("aime2025")


def amc23(**_):
    return _load("amc23")


def doc_to_text(doc: dict) -> str:
    """The problem and the instruction to reason step by step and box the answer (the Qwen math prompt)."""
    return math_prompt(doc["problem"])


def process_results(doc: dict, results: list) -> dict:
    return {"exact_match": float(answers_match(results[0], doc["answer"]))}
