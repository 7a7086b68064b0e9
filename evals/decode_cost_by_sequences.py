"""What a llama.cpp call costs with k sequences of one token each (the batched engine's decode rounds)
against one sequence of k tokens (a prompt or catch-up chunk), for each KV-cache layout.

    python evals/decode_cost_by_sequences.py --model qwen2.5-coder-1.5b --threads 2

Each sequence first holds ``--context`` tokens; every measurement appends tokens at the end and is undone
before the next, and the shapes are interleaved over ``--repeats`` rounds (median milliseconds). The
ratio cost(k sequences) / cost(1) bounds the throughput concurrent decoding can gain: k / ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relaygen_integrations.backends.llamacpp import LlamaCppBackend  # noqa: E402
from relaygen_integrations.backends.llamacpp_batch import SharedContext  # noqa: E402
from relaygen_integrations.core.scheduler import Job  # noqa: E402
from relaygen_integrations.fetcher import fetch  # noqa: E402
from relaygen_integrations.registry import Registry  # noqa: E402

TEXT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " * 40


def timed(shared: SharedContext, jobs: list[Job]) -> float:
    t0 = time.perf_counter()
    shared.run(jobs)
    return time.perf_counter() - t0


def measure(base: LlamaCppBackend, kv_unified: bool, sizes: list[int], context: int, repeats: int, threads: int,
            n_ctx: int):
    shared = SharedContext(base, max(sizes), n_ctx=n_ctx, n_threads=threads, kv_unified=kv_unified)
    prefix = base.tokenize(TEXT.encode())[:context]
    for seq in range(max(sizes)):
        shared.run([Job(shared, seq, 0, prefix)])
    token = prefix[-1]
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for k in sizes:
            times.setdefault(("sequences", k), []).append(
                timed(shared, [Job(shared, seq, context, [token]) for seq in range(k)]))
            times.setdefault(("tokens", k), []).append(timed(shared, [Job(shared, 0, context, [token] * k)]))
    shared.close()
    return {key: statistics.median(v) * 1000 for key, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", help="registry name or GGUF path")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--context", type=int, default=256, help="tokens each sequence holds first")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=None, help="cache cells per sequence (default: context + 64)")
    ap.add_argument("--layouts", nargs="+", choices=["per-sequence", "unified"], default=["per-sequence", "unified"])
    args = ap.parse_args()
    registry = Registry.load()
    path = fetch(registry.model(args.model)) if args.model in registry.models else Path(args.model)
    base = LlamaCppBackend(path, n_ctx=512, n_threads=args.threads, chat_format="raw")
    print(f"{path.name}, {args.threads} threads, {args.context} tokens of context per sequence "
          f"(of {args.n_ctx or args.context + 64} cells), "
          f"median of {args.repeats}, milliseconds per call\n")
    print("| KV cache | k | k sequences x 1 token | 1 sequence x k tokens | k sequences: throughput bound |")
    print("|---|---|---|---|---|")
    for layout in args.layouts:
        unified = layout == "unified"
        ms = measure(base, unified, args.sizes, args.context, args.repeats, args.threads, args.n_ctx or args.context + 64)
        for k in args.sizes:
            bound = k * ms["sequences", 1] / ms["sequences", k]
            print(f"| {'unified' if unified else 'per sequence'} | {k} | {ms['sequences', k]:.1f} | "
                  f"{ms['tokens', k]:.1f} | {bound:.2f}x |")
    base.close()


if __name__ == "__main__":
    main()
