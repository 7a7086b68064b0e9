"""Math word problems: the prompt we ask with, and reading the final answer back out."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import ConfigError

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def math_prompt(problem: str) -> str:
    """The Qwen math chain-of-thought prompt: asks for the answer in \\boxed{}."""
    return f"{problem}\n{MATH_INSTRUCTION}"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced; None when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_number(text: str) -> float | None:
    """The final numeric answer: from the last \\boxed{} if present, else the last number."""
    boxed = last_boxed(text)
    found = _NUMBER.findall(boxed if boxed is not None else text)
    if not found and boxed is not None:
        found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1 if boxed is None else 0].replace(",", ""))
    except ValueError:
        return None


def numeric_match(text: str, reference: str) -> bool:
    value = extract_number(text)
    return value is not None and abs(value - float(reference.replace(",", ""))) < 1e-6


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
        raise ConfigError("grading math answers needs math-verify: pip install 'relaygen-integrations[lm-eval]'") from None
    gold = parse(f"\\boxed{{{reference}}}")
    boxed = last_boxed(response)
    predicted = parse(response if boxed is None else f"\\boxed{{{boxed}}}")
    return bool(gold) and bool(predicted) and bool(verify(gold, predicted))
