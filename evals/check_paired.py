"""Paired comparisons the benchmark report does not print: one method against another on the problems both
answered (right only here / only there, sign test, identical texts), and what a checked method's check calls cost.

    python evals/check_paired.py evals/results/bench_check/gsm8k.jsonl relay+check relay
    python evals/check_paired.py evals/results/bench_check/gsm8k.jsonl relay+tau=0.01+handback=0.4 relay+tau=0.01
    python evals/check_paired.py evals/results/bench_resume/gsm8k.jsonl relay+check+resume relay+check \
        --other-results evals/results/bench_check/gsm8k.jsonl

With ``--other-results`` the other method's answers come from another run of the same protocol (greedy texts
are reproducible across runs, so the pairing holds; the line says how many of the two runs' `large` texts are
identical, as the check of that).

The check-call line prices each answer's all-rows catch-up calls of the large model (``row_calls``) with the unit
costs the results file measured (medians over its invocations): the wait a streamed small-model sentence adds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from relaygen_integrations.bench.summary import load_results, sign_test


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("method")
    ap.add_argument("other", help="the method to compare with")
    ap.add_argument("--other-results", type=Path, help="the other method's results file (default: the same file)")
    args = ap.parse_args(argv)
    res = load_results(args.results)
    other = load_results(args.other_results) if args.other_results else res

    def answers(results, method):
        return {(s["id"], s["sample"]): s for s in results.samples if s["method"] == method}

    by = {args.method: answers(res, args.method), args.other: answers(other, args.other)}
    if not all(by.values()):
        print(f"no answers for {', '.join(m for m, v in by.items() if not v)}", file=sys.stderr)
        return 2
    if other is not res:
        mine, theirs = answers(res, "large"), answers(other, "large")
        both = set(mine) & set(theirs)
        print(f"large in both runs: {sum(mine[k]['text'] == theirs[k]['text'] for k in both)} of {len(both)} "
              "texts identical")
    common = sorted(set(by[args.method]) & set(by[args.other]))
    a, b = ([by[m][k] for k in common] for m in (args.method, args.other))
    here = sum(x["correct"] and not y["correct"] for x, y in zip(a, b))
    there = sum(y["correct"] and not x["correct"] for x, y in zip(a, b))
    same = sum(x["text"] == y["text"] for x, y in zip(a, b))
    print(f"{args.method} vs {args.other} on {len(common)} answers: right only in {args.method} {here}, only in "
          f"{args.other} {there} (sign test p = {sign_test(here, there):.3g}); identical texts {same}")
    sizes = [int(n) for r in a for n, k in r["row_calls"].get("large", {}).items() for _ in range(k)]
    costs = res.unit_costs()
    if sizes and costs:
        p50, p90 = np.percentile(sizes, [50, 90])
        print(f"{args.method}: {len(sizes)} check calls, median {p50:.0f} tokens ({costs['large'].row_call(p50):.2f} s), "
              f"90th percentile {p90:.0f} tokens ({costs['large'].row_call(p90):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
