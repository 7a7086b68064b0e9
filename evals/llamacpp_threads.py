"""Per-token decode time of the relay engine on llama.cpp, called from Python's main thread and from
another thread, for several llama.cpp thread counts.

LiteLLM's async calls and its proxy generate in worker threads, so this is what they pay on a CPU.
With the OpenMP build of llama-cpp-python, several llama.cpp threads driven from a non-main Python
thread decode markedly slower than from the main thread; one llama.cpp thread does not.

    python evals/llamacpp_threads.py --pair smollm2-135m-self --threads 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relaygen_integrations import SamplingParams, load_pair  # noqa: E402

MESSAGES = [{"role": "user", "content": "Write three sentences about cats."}]


def median_gap_ms(engine, max_tokens: int) -> float:
    """Median time between consecutive text deltas (one token each here)."""
    t0, stamps = time.perf_counter(), []
    for event in engine.stream(MESSAGES, SamplingParams(temperature=0, max_tokens=max_tokens)):
        if event.kind == "text":
            stamps.append(time.perf_counter() - t0)
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:])) * 1e3


def in_thread(fn):
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="smollm2-135m-self")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import llama_cpp

    openmp = "OPENMP = 1" in llama_cpp.llama_print_system_info().decode()
    print(f"pair {args.pair}, llama.cpp OpenMP build: {openmp}, {args.repeats} alternating runs each, "
          f"{args.max_tokens} tokens, greedy\n")
    print("| llama.cpp threads | main thread, ms/token | other thread, ms/token | other / main |")
    print("|---|---|---|---|")
    for n in args.threads:
        engine = load_pair(args.pair, n_threads=n, check="off")  # the unchecked relay, as measured
        median_gap_ms(engine, 8)  # warm up
        main_runs, thread_runs = [], []
        for _ in range(args.repeats):
            main_runs.append(median_gap_ms(engine, args.max_tokens))
            thread_runs.append(in_thread(lambda: median_gap_ms(engine, args.max_tokens)))
        m, t = statistics.median(main_runs), statistics.median(thread_runs)
        print(f"| {n} | {m:.1f} | {t:.1f} | {t / m:.2f} |")
        engine.large.close()
        engine.small.close()


if __name__ == "__main__":
    main()
