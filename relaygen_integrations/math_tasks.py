"""Math word problems: the prompt we ask with, and reading the final answer back out."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def math_prompt(problem: str) -> str:
    """The Qwen math chain-of-thought prompt: asks for the answer in \\boxed{}."""
    return f"{problem}\n{MATH_INSTRUCTION}"


def box_content(text: str) -> tuple[str, bool]:
    """What stands in a box whose ``\\boxed{`` opened just before ``text`` (braces balanced), and whether
    the box was closed."""
    depth = 1
    for i, ch in enumerate(text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return text[:i], True
    return text, False


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced; None when there is none."""
    start = text.rfind("\\boxed{")
    return None if start < 0 else box_content(text[start + len("\\boxed{"):])[0]


DATA_DIR = Path(__file__).resolve().parents[1] / "evals" / "data"  # vendored, with provenance (a clone's)
DATASETS = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500.jsonl", "aime2024": "aime2024.jsonl",
            "aime2025": "aime2025.jsonl", "amc23": "amc23.jsonl"}


def data_file(name: str | Path) -> Path:
    """A vendored data set by name (gsm8k, math500, aime2024, aime2025, amc23) or a JSONL path: the one
    place that knows where the data lives (bench, calibration, demo and the lm-eval tasks use it)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if str(name) in DATASETS:
        path = DATA_DIR / DATASETS[str(name)]
        if path.is_file():
            return path
        raise ConfigError(f"data set {name!r} is in evals/data/ of the source tree ({path} not found): "
                          "run from a clone, or pass the JSONL file's path")
    if path.suffix or len(path.parts) > 1:
        raise ConfigError(f"data file not found: {path}")
    raise ConfigError(f"unknown data set {str(name)!r}: use {', '.join(DATASETS)} or a JSONL file (id, problem, answer)")


def load_problems(path: str | Path, limit: int | None = None) -> list[dict]:
    """Read a benchmark JSONL file (fields id, problem, answer)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            row = json.loads(line)
            missing = {"id", "problem", "answer"} - row.keys()
            if missing:
                raise ConfigError(f"{path}:{n} lacks field(s) {', '.join(sorted(missing))}")
            rows.append(row)
    return rows


def answers_match(response: str, reference: str) -> bool:
    """Whether a response reaches the reference answer, judged by mathematical equivalence with
    math-verify (fractions, LaTeX, units, thousands separators and percent signs are the library's
    business, not string rules here). The final answer is the last ``\\boxed{}`` (math-verify alone
    would read two boxes, a first answer and its correction, as the set of both), else the last
    expression in the response."""
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ConfigError("grading math answers needs math-verify: pip install 'relaygen-integrations[bench]' (or [lm-eval])") from None
    gold = parse(f"\\boxed{{{reference}}}")
    boxed = last_boxed(response)
    predicted = parse(response if boxed is None else f"\\boxed{{{boxed}}}")
    return bool(gold) and bool(predicted) and bool(verify(gold, predicted))
