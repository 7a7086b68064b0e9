"""Soak test: many mixed requests through `relaygen serve`, as a service sees them, every one accounted for.

A fixed plan of requests (GSM8K test problems 0-99 as prompts, greedy, ``--max-tokens`` each) is sent by
``--clients`` threads at once to one `relaygen serve --max-batch N` on 127.0.0.1: streamed and not, a
share closed by the client after a few chunks, a share invalid (each a different client mistake). Each
request ends as one outcome: ``whole`` (finish reason, text, usage), ``client_error`` (a 4xx, expected for
the invalid ones), ``cancelled`` (closed by its client), or a failure (``server_error``, ``unexpected_4xx``,
``unaccounted``). Measured besides: the server's resident memory (its whole process tree) after the first
20 requests and at the end, Python tracebacks in its log, and whether every sequence is free at the end:
``max_batch`` requests sent together must all stream their first token before any of them ends (a leaked
sequence would hold one back until another finished).

    python evals/soak_test.py --requests 200 --out evals/results/soak_test.md
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relaygen_integrations.math_tasks import load_problems, math_prompt  # noqa: E402
from relaygen_integrations.testing import free_port, wait_until_serving  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "gsm8k_test.jsonl"
RELAYGEN = Path(sys.executable).parent / "relaygen"
INVALID = {  # each a client mistake: (what is sent instead of a good request, the status it must get)
    "negative max_tokens": ({"max_tokens": -5}, 400),
    "image part": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}]}, 400),
    "unknown model": ({"model": "no-such-model"}, 400),
    "no messages": ({"messages": []}, 400),
    "negative temperature": ({"temperature": -1.0}, 400),
}
FAILURES = ("server_error", "unexpected_4xx", "unaccounted")


def plan(n: int, seed: int, abandon: float, invalid: float) -> list[dict]:
    """The requests, shuffled: which are streamed, abandoned (after how many chunks) or invalid."""
    rng = random.Random(seed)
    n_invalid, n_abandon = round(n * invalid), round(n * abandon)
    kinds = ["invalid"] * n_invalid + ["abandon"] * n_abandon + ["stream", "whole"] * n
    kinds = kinds[:n]
    rng.shuffle(kinds)
    names = list(INVALID)
    return [{"i": i, "kind": k, "problem": i % 100, "abandon_after": rng.randint(1, 5),
             "mistake": names[i % len(names)] if k == "invalid" else None} for i, k in enumerate(kinds)]


def run_one(client, model: str, prompts: list[str], req: dict, max_tokens: int) -> dict:
    import openai

    body = {"model": model, "messages": [{"role": "user", "content": prompts[req["problem"]]}], "temperature": 0,
            "max_tokens": max_tokens}
    expected = None
    if req["kind"] == "invalid":
        change, expected = INVALID[req["mistake"]]
        body.update(change)
    try:
        if req["kind"] in ("stream", "abandon"):
            stream = client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
            text, finish, usage = [], None, None
            for n, chunk in enumerate(stream, 1):
                if chunk.choices:
                    text.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
                usage = chunk.usage or usage
                if req["kind"] == "abandon" and n >= req["abandon_after"]:
                    stream.close()
                    return {"outcome": "cancelled"}
            ok = finish in ("stop", "length") and usage is not None and "".join(text)
        else:
            r = client.chat.completions.create(**body)
            ok = r.choices[0].finish_reason in ("stop", "length") and r.usage and r.choices[0].message.content
        return {"outcome": "whole" if ok and expected is None else "unaccounted"}
    except openai.APIStatusError as e:
        if 400 <= e.status_code < 500:
            return {"outcome": "client_error" if e.status_code == expected else "unexpected_4xx",
                    "status": e.status_code, "error": str(e)[:200]}
        return {"outcome": "server_error", "status": e.status_code, "error": str(e)[:200]}
    except Exception as e:  # a broken connection or a timeout: the server failed this request
        return {"outcome": "server_error", "error": f"{type(e).__name__}: {e}"[:200]}


def tree_rss_mib(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2 ** 20


def all_sequences_free(client, model: str, prompts: list[str], max_batch: int) -> bool:
    """``max_batch`` streams at once: True if every first token came before any stream ended."""
    firsts, ends = [None] * max_batch, [None] * max_batch

    def go(k):
        s = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompts[k]}],
                                           temperature=0, max_tokens=64, stream=True)
        for chunk in s:
            if firsts[k] is None and chunk.choices and chunk.choices[0].delta.content:
                firsts[k] = time.monotonic()
        ends[k] = time.monotonic()

    threads = [threading.Thread(target=go, args=(k,)) for k in range(max_batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return None not in firsts and None not in ends and max(firsts) < min(ends)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", default=None, help="the served pair (default: the registry's default)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--abandon", type=float, default=0.20, help="share closed by the client mid-stream")
    ap.add_argument("--invalid", type=float, default=0.05, help="share of client mistakes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline-min", type=float, default=30.0, help="no request starts after this (minutes)")
    ap.add_argument("--out", type=Path, default=None, help="markdown report to append to")
    args = ap.parse_args()

    import openai
    from tqdm import tqdm

    from relaygen_integrations.registry import Registry

    pair = Registry.load().pair(args.pair).name
    prompts = [math_prompt(p["problem"]) for p in load_problems(DATA, limit=100)]
    requests = plan(args.requests, args.seed, args.abandon, args.invalid)
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="relaygen-soak-")) / "serve.log"
    log = log_path.open("w+")
    cmd = [str(RELAYGEN), "serve", "--pair", pair, "--port", str(port), "--max-batch", str(args.max_batch),
           "--threads", str(args.threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                              env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    try:
        wait_until_serving(client, server, "relaygen serve", timeout=600, log=lambda: log_path.read_text())
        todo, results, rss = queue.Queue(), {}, {}
        for r in requests:
            todo.put(r)
        start = time.monotonic()
        deadline = start + args.deadline_min * 60
        bar = tqdm(total=len(requests), desc="soak", unit="req")
        lock = threading.Lock()

        def worker():
            while time.monotonic() < deadline:
                try:
                    req = todo.get_nowait()
                except queue.Empty:
                    return
                out = run_one(client, pair, prompts, req, args.max_tokens)
                with lock:
                    results[req["i"]] = {**req, **out}
                    bar.update()
                    if len(results) == 20:
                        rss["after_20"] = tree_rss_mib(server.pid)

        workers = [threading.Thread(target=worker) for _ in range(args.clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        bar.close()
        wall = time.monotonic() - start
        rss["at_end"] = tree_rss_mib(server.pid)
        free = all_sequences_free(client, pair, prompts, args.max_batch)
    finally:
        server.terminate()
        stopped = server.wait(60)
    text = log_path.read_text()
    counts = {k: sum(r["outcome"] == k for r in results.values())
              for k in ("whole", "client_error", "cancelled", *FAILURES)}
    counts["not_sent"] = len(requests) - len(results)
    summary = {"pair": pair, "requests": len(requests), **{f"by_kind_{k}": sum(r["kind"] == k for r in requests)
               for k in ("whole", "stream", "abandon", "invalid")}, "outcomes": counts,
               "tracebacks_in_log": text.count("Traceback"), "client_error_log_lines": text.count("client error "),
               "rss_mib_after_20": round(rss.get("after_20", 0), 1), "rss_mib_at_end": round(rss["at_end"], 1),
               "rss_change_pct": round(100 * (rss["at_end"] / rss["after_20"] - 1), 2) if "after_20" in rss else None,
               "all_sequences_free_at_end": free, "wall_s": round(wall, 1), "serve_exit": stopped,
               "failures": [r for r in results.values() if r["outcome"] in FAILURES][:10]}
    print(json.dumps(summary, indent=1))
    passed = (sum(counts[k] for k in FAILURES) == 0 and counts["not_sent"] == 0 and free
              and summary["rss_change_pct"] is not None and abs(summary["rss_change_pct"]) <= 5)
    if args.out:
        with args.out.open("a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {pair}, {len(requests)} requests, "
                    f"{args.clients} clients, max_batch {args.max_batch}, {args.max_tokens} tokens: "
                    f"{'PASS' if passed else 'FAIL'}\n\n`python evals/soak_test.py {' '.join(sys.argv[1:])}`\n\n"
                    f"```json\n{json.dumps(summary, indent=1)}\n```\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
