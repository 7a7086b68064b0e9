"""Load test: N concurrent streamed clients against `relaygen serve` on 127.0.0.1.

For each concurrency level the same bounded set of requests (GSM8K test problems, greedy, a fixed
budget) is sent by N clients at once, each client taking the next request when its last one ended.
Measured: total throughput (completion tokens per second over the level's wall time), time to first
token and per-request latency (p50/p95), errors (must be 0), and accounting: every request ends with
a finish reason, text, usage and one response id across its chunks, or it is an error.

    python evals/load_test.py --levels 1 2 4 8 --requests 8 --max-tokens 64 --out evals/results/load_test.md
    python evals/load_test.py --backend openai ...   # the same through two local llama.cpp servers

Each level starts its own server (``--max-batch`` = the level), so levels do not share caches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relaygen_integrations.math_tasks import load_problems, math_prompt  # noqa: E402
from relaygen_integrations.testing import free_port, llama_server, wait_until_serving  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "gsm8k_test.jsonl"
RELAYGEN = Path(sys.executable).parent / "relaygen"


@contextmanager
def serve(args, max_batch: int, extra: list[str]):
    import openai

    port = free_port()
    cmd = [str(RELAYGEN), "serve", "--pair", args.pair, "--port", str(port), "--max-batch", str(max_batch),
           "--key", "sk-load-test", "--check", "off", *extra] + (["--threads", str(args.threads)] if args.threads and args.backend == "llamacpp"
                                              else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-load-test", max_retries=0, timeout=900)
    try:
        wait_until_serving(client, proc, "relaygen serve", timeout=600)
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def one_request(client, model: str, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first, text, ids, finish, usage = None, "", set(), None, None
    try:
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                temperature=0, max_tokens=max_tokens, stream=True,
                                                stream_options={"include_usage": True})
        for chunk in stream:
            ids.add(chunk.id)
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    first = first or time.perf_counter() - t0
                    text += choice.delta.content
                finish = choice.finish_reason or finish
    except Exception as e:  # counted, with its message: the load test's errors column
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    whole = bool(text) and finish in ("stop", "length") and usage is not None and len(ids) == 1
    return {"ttft": first, "latency": time.perf_counter() - t0, "tokens": usage.completion_tokens if usage else 0,
            "whole": whole, "finish": finish}


def run_level(client, model: str, prompts: list[str], clients: int, max_tokens: int) -> dict:
    queue, lock, results = list(enumerate(prompts)), threading.Lock(), {}

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                i, prompt = queue.pop(0)
            results[i] = one_request(client, model, prompt, max_tokens)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results.values() if "error" not in r]
    pct = lambda xs, q: statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else (xs[0] if xs else float("nan"))  # noqa: E731
    return {"clients": clients, "requests": len(prompts), "answered": len(results), "whole": sum(r["whole"] for r in ok),
            "errors": [r["error"] for r in results.values() if "error" in r], "wall": wall,
            "tokens": sum(r["tokens"] for r in ok), "throughput": sum(r["tokens"] for r in ok) / wall,
            "ttft_p50": pct([r["ttft"] for r in ok if r["ttft"]], 50), "ttft_p95": pct([r["ttft"] for r in ok if r["ttft"]], 95),
            "latency_p50": pct([r["latency"] for r in ok], 50), "latency_p95": pct([r["latency"] for r in ok], 95)}


def table(rows: list[dict]) -> str:
    base = rows[0]["throughput"]
    out = ["| clients | requests | whole answers | errors | tokens | wall s | tokens/s | vs 1 client | TTFT p50 / p95 s | "
           "latency p50 / p95 s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['clients']} | {r['requests']} | {r['whole']} | {len(r['errors'])} | {r['tokens']} | {r['wall']:.1f} | "
                   f"{r['throughput']:.2f} | {r['throughput'] / base:.2f}x | {r['ttft_p50']:.2f} / {r['ttft_p95']:.2f} | "
                   f"{r['latency_p50']:.1f} / {r['latency_p95']:.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="qwen2.5-coder-1.5b+0.5b")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrent clients per level")
    ap.add_argument("--requests", type=int, default=8, help="requests per level (GSM8K test problems 0..N-1)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backend", choices=["llamacpp", "openai"], default="llamacpp",
                    help="openai: relaygen serve in front of two local llama.cpp servers (one per model)")
    ap.add_argument("--mode", default="relay", choices=["relay", "large"])
    ap.add_argument("--out", help="append the table (Markdown) and the raw rows (JSON) to this file")
    args = ap.parse_args()
    prompts = [math_prompt(p["problem"]) for p in load_problems(DATA, limit=args.requests)]
    rows = []
    with ExitStack() as stack:
        extra = ["--mode", args.mode]
        if args.backend == "openai":
            from relaygen_integrations.fetcher import fetch
            from relaygen_integrations.registry import Registry

            registry = Registry.load()
            pair = registry.pair(args.pair)
            urls = [stack.enter_context(llama_server(fetch(registry.model(m)), n_ctx=4096,
                                                     threads=args.threads or 2)) for m in (pair.large, pair.small)]
            extra += ["--backend", "openai", "--large-url", urls[0], "--small-url", urls[1]]
        for level in args.levels:
            with serve(args, level, extra) as client:
                one_request(client, args.pair, "Hi", 4)  # warm up
                rows.append(run_level(client, args.pair, prompts, level, args.max_tokens))
                print(json.dumps(rows[-1]), flush=True)
    title = (f"{args.pair}, {args.mode}, backend {args.backend}, {args.requests} GSM8K requests per level, greedy, "
             f"{args.max_tokens} tokens, streamed; {os.cpu_count()} cores; one run")
    report = f"\n## {title}\n\n`{' '.join(sys.argv)}`\n\n{table(rows)}\n"
    print(report)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(report + "\n<!-- rows: " + json.dumps(rows) + " -->\n")


if __name__ == "__main__":
    main()
