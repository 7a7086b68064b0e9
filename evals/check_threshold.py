"""The checked relay's threshold on a pair's calibration traces: quantiles of the large model's probability of
its own trace tokens (calibration/threshold.py's rule), and how many tokens fall below common thresholds.

    python evals/check_threshold.py models/profiles/qwen2.5-coder-1.5b+0.5b.traces.jsonl \
        --large qwen2.5-coder-1.5b --threads 2 --out evals/results/check_threshold.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from relaygen_integrations.calibration.threshold import self_probabilities, threshold_from
from relaygen_integrations.calibration.traces import load_traces
from relaygen_integrations.loader import load_backend
from relaygen_integrations.math_tasks import math_prompt

QUANTILES = (0.005, 0.01, 0.02, 0.05)
THRESHOLDS = (0.001, 0.01, 0.05, 0.1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces", type=Path)
    ap.add_argument("--large", default="qwen2.5-coder-1.5b", help="registry name or GGUF path of the large model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here too")
    args = ap.parse_args(argv)
    traces = load_traces(args.traces)
    large = load_backend(args.large, n_ctx=4096, n_threads=args.threads)
    chat = large.chat_prompt
    t0, probabilities = time.perf_counter(), []
    for n, rec in enumerate(traces, 1):
        probabilities.append(self_probabilities(large, chat([{"role": "user", "content": math_prompt(rec["problem"])}]),
                                                rec["trace"]))
        print(f"\r{n}/{len(traces)} traces", end="", flush=True)
    pooled = np.concatenate(probabilities)
    result = {"traces": str(args.traces), "large": args.large, "trace_count": len(traces), "tokens": int(pooled.size),
              "seconds": round(time.perf_counter() - t0, 1),
              "quantiles": {str(q): threshold_from(probabilities, q) for q in QUANTILES},
              "share_below": {str(t): float((pooled < t).mean()) for t in THRESHOLDS}}
    print("\n" + json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
