"""The calibration pipeline behind ``relaygen calibrate``: traces, margins, table, selection, profile, plot."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

from ..backends.scoring import require_scoring
from ..core.cues import REFERENCE_CANDIDATES, MatchMode, validate_cues
from ..core.engine import RelayEngine
from ..core.sampling import SamplingParams
from ..errors import ConfigError
from ..math_tasks import data_file, load_problems, math_prompt
from ..fetcher import sha256_file
from .margins import teacher_force
from .plot import plot_cue_table
from .table import cue_table, select_cues
from .threshold import DEFAULT_QUANTILE, check_quantile_of, self_probabilities, threshold_from
from .traces import generate_traces

def check_writable(path: Path) -> None:
    path = path.resolve()
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"cannot write {path}: permission denied")


def calibrate(engine: RelayEngine, *, data: str | Path, out: str | Path, problems: int = 40, start: int = 0,
              samples: int = 4, seed: int = 0, params: SamplingParams | None = None,
              candidates: list[str] | None = None, mode: MatchMode = "word", threshold: float = 0.0,
              min_occurrences: int = 5, traces_path: str | Path | None = None, models: dict | None = None,
              plot: bool = True, progress: bool = True, check_quantile: float = DEFAULT_QUANTILE,
              default_check: bool = False) -> dict:
    """Run the whole calibration and write the profile JSON (atomically) and its plot. Returns the profile.
    Besides the cues it records the checked relay's default threshold (``check.tau``, calibration/threshold.py);
    ``default_check`` makes that tau the pair's default check (``check=auto``), a choice left to the user."""
    out = Path(out)
    check_writable(out)
    check_quantile_of(check_quantile)
    small = require_scoring(engine.small, "calibration (it teacher-forces the small model over the large model's traces)")
    large = require_scoring(engine.large, "calibration (it teacher-forces the large model over its own traces)")
    data_path = data_file(data)
    if start < 0 or problems <= 0 or samples <= 0:
        raise ConfigError("--start must be >= 0, --problems and --samples > 0")
    chosen = load_problems(data_path, start + problems)[start:]
    if not chosen:
        raise ConfigError(f"{data_path} has no problems from index {start}")
    candidates = list(validate_cues(candidates or REFERENCE_CANDIDATES))
    params = (params or SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_tokens=512, seed=seed)).validated()
    traces_path = Path(traces_path) if traces_path else out.with_suffix(".traces.jsonl")
    check_writable(traces_path)
    models = models or {}
    large_name = models.get("large", {}).get("name", str(getattr(engine.large, "path", "large")))

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    t0 = time.perf_counter()
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("1/3 large model writes traces", total=len(chosen) * samples)
        traces = generate_traces(engine, chosen, samples, seed, params, traces_path, large_name,
                                 on_trace=lambda rec, reused: bar.advance(task))
    t_traces = time.perf_counter() - t0
    t1 = time.perf_counter()
    scored = []
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("2/3 small model scores them", total=len(traces))
        for rec in traces:
            prompt = small.chat_prompt([{"role": "user", "content": math_prompt(rec["problem"])}])
            scored.append(teacher_force(small, prompt, rec["trace"]))
            bar.advance(task)
    t_margins = time.perf_counter() - t1
    t2 = time.perf_counter()
    own = []
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("3/3 large model scores its own traces", total=len(traces))
        for rec in traces:
            prompt = large.chat_prompt([{"role": "user", "content": math_prompt(rec["problem"])}])
            own.append(self_probabilities(large, prompt, rec["trace"]))
            bar.advance(task)
    check = _check_threshold(own, check_quantile, time.perf_counter() - t2)
    if default_check and check["tau"] is not None:
        check["default"] = "tau"
    rows, overall = cue_table(scored, candidates, mode)
    selected = select_cues(rows, threshold, min_occurrences)
    selection = {"threshold": threshold, "min_occurrences": min_occurrences, "rule": "delta > threshold"}
    if not selected:
        raise ConfigError(f"no cue passed the selection ({selection['rule']} with enough occurrences); "
                          "the profile was not written. Lower --min-occurrences or use more traces")
    profile = {
        "name": out.stem,
        "cues": selected,
        "matching": mode,
        "selection": selection,
        "overall_mean_margin": overall,
        "check": check,
        "table": [r.to_dict() for r in sorted(rows, key=lambda r: math.inf if math.isnan(r.delta) else -r.delta)],
        "models": models,
        "data": {"file": data_path.name, "sha256": sha256_file(data_path), "start": start, "problems": len(chosen),
                 "problem_ids": [p["id"] for p in chosen]},
        "samples": samples,
        "seed": seed,
        "sampling": {k: v for k, v in asdict(params).items() if k not in ("seed", "stop")},
        "cost": {"trace_seconds": round(sum(r["seconds"] for r in traces), 1),
                 "wall_seconds_this_run": {"traces": round(t_traces, 1), "margins": round(t_margins, 1)},
                 "trace_tokens": sum(r["tokens"] for r in traces),
                 "scored_tokens": int(sum(len(s.margins) for s in scored)),
                 "truncated_traces": sum(s.truncated for s in scored)},
        "traces_file": traces_path.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(json.dumps(profile, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)  # a failed run above never touches an existing good profile
    if plot:
        plot_cue_table(rows, overall, out.with_suffix(".png"),
                       f"{out.stem}: {len(traces)} traces, {len(selected)} of {len(candidates)} cues selected")
    return profile


def _check_threshold(probabilities: list, quantile: float, seconds: float) -> dict:
    """The profile's ``check`` entry: tau and how it was derived (tau None, with the reason, on too few tokens)."""
    rule = (f"tau = the {quantile:.1%} quantile of the large model's teacher-forced probability of the tokens "
            "of its own traces")
    tokens = int(sum(len(p) for p in probabilities))
    try:
        tau = threshold_from(probabilities, quantile)
    except ConfigError as e:
        return {"tau": None, "why": str(e), "quantile": quantile, "rule": rule, "scored_tokens": tokens}
    return {"tau": tau, "quantile": quantile, "rule": rule, "scored_tokens": tokens, "seconds": round(seconds, 1)}
