"""Compare `lm_eval --model relaygen` runs of one task: accuracy, paired differences, relay statistics.

Each run is an lm-eval ``--output_path`` folder written with ``--log_samples`` (the relay statistics file
``relaygen_requests_*.jsonl`` lies beside the samples). The first run is the reference for the paired
comparison (on how many problems the two differ in correctness, each way).

    python evals/compare_lm_eval_runs.py large=/tmp/gsm8k50_large relay=/tmp/gsm8k50_relay
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def latest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    if not found:
        sys.exit(f"no {pattern} under {folder}: run lm_eval with --output_path {folder} --log_samples")
    return found[-1]


def load_run(folder: Path) -> dict:
    samples = [json.loads(line) for line in latest(folder, "samples_*.jsonl").read_text().splitlines()]
    requests = [json.loads(line) for line in latest(folder, "relaygen_requests_*.jsonl").read_text().splitlines()]
    results = json.loads(latest(folder, "results_*.json").read_text())
    correct = {s["doc_id"]: s["exact_match"] == 1.0 for s in samples}
    return {"correct": correct, "requests": requests, "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=FOLDER, the reference first")
    args = ap.parse_args()
    runs = {}
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        if not folder:
            sys.exit(f"expected NAME=FOLDER, got {spec!r}")
        runs[name] = load_run(Path(folder))
    ref_name, ref = next(iter(runs.items()))
    print("| run | problems | accuracy (± s.e.) | tokens per answer | large model's share | switches per answer | "
          f"seconds per answer | tok/s | time / {ref_name} |")
    print("|---|---|---|---|---|---|---|---|---|")
    ref_seconds = sum(r["seconds"] for r in ref["requests"])
    for name, run in runs.items():
        n = len(run["correct"])
        acc = sum(run["correct"].values()) / n
        reqs = run["requests"]
        tokens = sum(r["generated_tokens"] for r in reqs)
        large = sum(r["large_tokens"] for r in reqs)
        seconds = sum(r["seconds"] for r in reqs)
        print(f"| {name} | {n} | {acc:.2f} ± {math.sqrt(acc * (1 - acc) / max(n - 1, 1)):.2f} | {tokens / n:.0f} | "
              f"{large / tokens:.1%} | {sum(r['switches'] for r in reqs) / n:.2f} | {seconds / n:.1f} | "
              f"{tokens / seconds:.1f} | {seconds / ref_seconds:.2f} |")
    print()
    for name, run in list(runs.items())[1:]:
        common = sorted(set(ref["correct"]) & set(run["correct"]))
        both = sum(ref["correct"][d] and run["correct"][d] for d in common)
        only_ref = [d for d in common if ref["correct"][d] and not run["correct"][d]]
        only_run = [d for d in common if run["correct"][d] and not ref["correct"][d]]
        print(f"{name} vs {ref_name} on {len(common)} problems: both right {both}, only {ref_name} right "
              f"{len(only_ref)} {only_ref}, only {name} right {len(only_run)} {only_run}, both wrong "
              f"{len(common) - both - len(only_ref) - len(only_run)}")


if __name__ == "__main__":
    main()
