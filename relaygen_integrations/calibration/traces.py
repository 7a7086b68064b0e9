"""Step 1: the large model writes reasoning traces, stored one JSON line each so a rerun resumes.

A trace record holds the problem id, the sample index, its seed and the settings that produced it; a rerun
reuses every stored record whose settings match and generates only the missing ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from ..core.engine import RelayEngine
from ..core.sampling import SamplingParams
from ..math_tasks import math_prompt


def sample_seed(seed: int, problem_index: int, sample: int) -> int:
    """One seed per (problem, sample), stable when the problem list grows."""
    return (seed * 1_000_003 + problem_index * 1009 + sample) % (2**32)


def settings_key(params: SamplingParams, large_name: str) -> dict:
    p = asdict(params)
    p.pop("seed")
    p["stop"] = list(p["stop"])
    return {"large": large_name, **p}


def load_traces(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by an interruption: generated again
                continue
    return out


def generate_traces(engine: RelayEngine, problems: list[dict], samples: int, seed: int, params: SamplingParams,
                    path: Path, large_name: str, on_trace: Callable[[dict, bool], None] | None = None) -> list[dict]:
    """Traces for every (problem, sample), reusing those already stored in ``path``."""
    if engine.config.mode != "large":
        engine = RelayEngine(engine.large, engine.small, engine.profile, replace(engine.config, mode="large"))
    key = settings_key(params, large_name)
    stored = {(r["id"], r["sample"]): r for r in load_traces(path) if r.get("settings") == key}
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with open(path, "a", encoding="utf-8") as f:
        for index, prob in enumerate(problems):
            for k in range(samples):
                if (prob["id"], k) in stored:
                    out.append(stored[(prob["id"], k)])
                    if on_trace:
                        on_trace(out[-1], True)
                    continue
                s = sample_seed(seed, index, k)
                r = engine.generate(math_prompt(prob["problem"]), replace(params, seed=s))
                rec = {"id": prob["id"], "sample": k, "seed": s, "problem": prob["problem"], "trace": r.text,
                       "tokens": r.stats.generated_tokens, "seconds": r.stats.wall_seconds,
                       "finish": r.stats.finish_reason, "settings": key}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                out.append(rec)
                if on_trace:
                    on_trace(rec, False)
    return out
