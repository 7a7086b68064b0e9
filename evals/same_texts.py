"""Are two `relaygen bench run` files the same answers? Per (problem, method) in both: the text byte for
byte, and the metering the cost model reads (calls, row_calls, first_call, segments).

    python evals/same_texts.py before.jsonl after.jsonl     # exit status 1 if any text differs

Used for refactors that must not change behaviour (docs/architecture.md, "Checking a refactor").
"""

from __future__ import annotations

import json
import sys


def samples(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return {(r["id"], r["method"]): r for r in map(json.loads, f) if r.get("type") == "sample"}


def main(before: str, after: str) -> int:
    a, b = samples(before), samples(after)
    shared = sorted(set(a) & set(b))
    if not shared:
        print("no (problem, method) pair is in both files")
        return 1
    differ = 0
    print("| problem | method | text | calls | row_calls | first_call | segments |\n|---|---|---|---|---|---|---|")
    for key in shared:
        x, y = a[key], b[key]
        same = {k: x.get(k) == y.get(k) for k in ("text", "calls", "row_calls", "first_call", "segments")}
        differ += not same["text"]
        print(f"| {key[0]} | {key[1]} | " + " | ".join("same" if v else "DIFFERENT" for v in same.values()) + " |")
    print(f"\n{len(shared) - differ} of {len(shared)} texts byte-identical")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
