"""The relay statistics of an ``lm_eval --model relaygen`` run: one record per generated request, a JSONL
file beside lm-eval's ``--output_path``, and their summary per task (the results file's ``config.relaygen``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from ..core.events import RelayResult


def request_record(req, result: RelayResult) -> dict:
    """One lm-eval request's relay statistics: ``RelayStats.summary()`` under the request's task and doc."""
    return {"task": req.task_name, "doc_id": req.doc_id, **result.stats.summary()}


def write_stats(path: Path | None, records: list[dict]) -> None:
    """Write the records (when there is a file to write) and print each task's summary line."""
    if path is None or not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    for task, row in summarise(records).items():
        print(f"relaygen {task}: {row['requests']} requests, large model wrote {row['large_share']:.1%} of "
              f"{row['generated_tokens']} tokens, {row['switches_per_request']:.1f} switches per request, "
              f"{row['tokens_per_second']:.1f} tok/s", file=sys.stderr)
    print(f"relaygen: per-request statistics in {path}", file=sys.stderr)


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per task (and ``all``): requests, tokens by each model, share of the large model (token-weighted),
    switches per request, time, throughput and finish reasons."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(str(r["task"]), []).append(r)
    if len(groups) > 1:
        groups["all"] = records
    out = {}
    for task, rows in groups.items():
        tokens = sum(r["generated_tokens"] for r in rows)
        seconds = sum(r["seconds"] for r in rows)
        out[task] = {
            "requests": len(rows), "generated_tokens": tokens,
            "large_tokens": sum(r["large_tokens"] for r in rows), "small_tokens": sum(r["small_tokens"] for r in rows),
            "large_share": large_share(rows), "switches_per_request": sum(r["switches"] for r in rows) / len(rows),
            "seconds": round(seconds, 3), "tokens_per_second": tokens / seconds if seconds else 0.0,
            "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
        }
    return out


def large_share(rows: list[dict]) -> float:
    """The large model's share of the records' generated tokens (token-weighted)."""
    tokens = sum(r["generated_tokens"] for r in rows)
    return sum(r["large_tokens"] for r in rows) / tokens if tokens else 0.0


def stats_path_beside_output(pretrained: str | None) -> Path | None:
    """When lm_eval runs with --output_path: the folder where lm-eval writes the results file (named
    after ``pretrained``, as lm-eval names it; the output path itself when there is no name), else None."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output_path", "-o", default=None)
    try:
        known, _ = parser.parse_known_args(sys.argv[1:])
    except SystemExit:  # pragma: no cover - malformed argv: lm-eval reports it
        return None
    if not known.output_path:
        return None
    out = Path(known.output_path)
    if out.suffix == ".json":
        folder = out.parent
    else:
        from lm_eval.utils import sanitize_model_name

        folder = out / sanitize_model_name(pretrained) if pretrained else out
    return folder / f"relaygen_requests_{datetime.now().strftime('%Y-%m-%dT%H-%M-%S')}.jsonl"
