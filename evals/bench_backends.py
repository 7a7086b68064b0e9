"""The three backends on the default pair: do they agree, and what does a relay cost on each?

    python evals/bench_backends.py --problems 10 --agreement-tokens 128 --relay-problems 3

1. Agreement (large model, greedy, GSM8K prompts): llama.cpp decodes; transformers (the same GGUF,
   dequantised to float32) then reads llama.cpp's tokens in one teacher-forced pass. Reported: the
   share of positions where transformers' own top choice is llama.cpp's token, the logit gap where
   not, and the tokens both write before the first difference when transformers decodes freely.
2. Relay wall time per backend on the same problems, greedy: llama.cpp in-process, transformers
   in-process, and two llama-cpp-python servers on 127.0.0.1 (the openai backend), one at a time.

Writes evals/results/backends_default_pair.{jsonl,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams
from relaygen_integrations.loader import load_pair
from relaygen_integrations.math_tasks import answers_match, load_problems, math_prompt
from relaygen_integrations.fetcher import fetch
from relaygen_integrations.registry import Registry

HERE = Path(__file__).resolve().parent


def agreement(problems, max_tokens: int, threads: int, console) -> list[dict]:
    import torch

    from relaygen_integrations.backends.llamacpp import LlamaCppBackend
    from relaygen_integrations.backends.transformers import TransformersBackend

    reg = Registry.load()
    path = fetch(reg.model(reg.pair(None).large))
    cpp = LlamaCppBackend(path, n_ctx=4096, n_threads=threads)
    t0 = time.perf_counter()
    hf = TransformersBackend(path, n_ctx=4096, n_threads=threads)
    console.print(f"transformers loaded {path.name} in {time.perf_counter() - t0:.0f} s")
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    rows = []
    for p in problems:
        prompt = cpp.chat_prompt([{"role": "user", "content": math_prompt(p["problem"])}])
        ids = cpp.prompt_tokens(prompt)
        assert hf.prompt_tokens(prompt) == ids, "the two tokenizers disagree on the prompt"
        out_cpp = _greedy(cpp, ids, params)
        # teacher forcing: transformers scores llama.cpp's continuation in one pass
        hf.reset()
        with torch.inference_mode():
            logits = hf._forward(ids + out_cpp[:-1], keep=len(out_cpp)).cpu().numpy()
        top = logits.argmax(axis=1)
        gaps = logits.max(axis=1) - logits[np.arange(len(out_cpp)), out_cpp]
        out_hf = _greedy(hf, ids, params)
        prefix = next((i for i, (a, b) in enumerate(zip(out_cpp, out_hf)) if a != b), min(len(out_cpp), len(out_hf)))
        rows.append({"kind": "agreement", "id": p["id"], "tokens": len(out_cpp),
                     "teacher_forced_agree": int((top == np.asarray(out_cpp)).sum()),
                     "max_gap_where_differs": float(gaps[top != np.asarray(out_cpp)].max(initial=0.0)),
                     "common_prefix": prefix, "identical": out_cpp == out_hf})
        console.print(rows[-1])
    cpp.close(), hf.close()
    return rows


def _greedy(backend, prompt_ids: list[int], params: SamplingParams) -> list[int]:
    from relaygen_integrations.core.sampling import Sampler

    backend.reset()
    context, sampler = list(prompt_ids), Sampler(params.validated())
    for _ in range(params.max_tokens):
        token = backend.next_token(context, sampler).token
        if backend.is_end_of_generation(token):
            break
        context.append(token)
    return context[len(prompt_ids):]


def relay_timing(problems, max_tokens: int, threads: int, backends: list[str], console) -> list[dict]:
    from relaygen_integrations.testing import llama_server

    reg = Registry.load()
    pair = reg.pair(None)
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    rows = []
    for backend in backends:
        if backend == "openai":
            large_path, small_path = fetch(reg.model(pair.large)), fetch(reg.model(pair.small))
            with llama_server(large_path, n_ctx=4096, threads=threads) as lu, \
                    llama_server(small_path, n_ctx=4096, threads=threads) as su:
                engine = load_pair(backend="openai", large_url=lu, small_url=su)
                rows += _time_engine(engine, backend, problems, params, console)
                engine.large.close(), engine.small.close()
            continue
        t0 = time.perf_counter()
        engine = load_pair(backend=backend, n_ctx=4096, n_threads=threads)
        console.print(f"{backend}: pair loaded in {time.perf_counter() - t0:.0f} s")
        rows += _time_engine(engine, backend, problems, params, console)
        engine.large.close(), engine.small.close()
    return rows


def _time_engine(engine: RelayEngine, backend: str, problems, params, console) -> list[dict]:
    """Large-only and relay, interleaved per problem so machine noise hits both alike."""
    rows = []
    runs = {mode: RelayEngine(engine.large, engine.small, engine.profile,
                              RelayConfig(mode=mode, reasoning_end=engine.config.reasoning_end,
                                          check="off"))  # the unchecked relay, as measured
            for mode in ("large", "relay")}
    for p in problems:
        for mode, run in runs.items():
            r = run.generate(math_prompt(p["problem"]), params)
            rows.append({"kind": "timing", "backend": backend, "mode": mode, "id": p["id"],
                         "seconds": r.stats.wall_seconds, "tokens": r.stats.generated_tokens,
                         "large_share": r.stats.large_share, "switches": r.stats.switches,
                         "correct": answers_match(r.text, p["answer"])})
            console.print(rows[-1])
    return rows


def report(rows: list[dict], args) -> str:
    lines = [f"# Backends on the default pair ({platform.machine()}, {args.threads} threads, greedy)", "",
             f"Last command: `python evals/bench_backends.py --problems {args.problems} --agreement-tokens "
             f"{args.agreement_tokens} --relay-problems {args.relay_problems} --relay-tokens {args.relay_tokens} "
             f"--threads {args.threads} --backends {args.backends}` (a rerun replaces only the parts it measures)", ""]
    agree = [r for r in rows if r["kind"] == "agreement"]
    if agree:
        n = sum(r["tokens"] for r in agree)
        ok = sum(r["teacher_forced_agree"] for r in agree)
        lines += ["## llama.cpp vs transformers, large model (Qwen2.5-Coder-1.5B Q4_K_M GGUF)", "",
                  "| problem | tokens | teacher-forced agreement | largest logit gap where not | common prefix | identical |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['id']} | {r['tokens']} | {r['teacher_forced_agree'] / r['tokens']:.1%} | "
                  f"{r['max_gap_where_differs']:.2f} | {r['common_prefix']} | {'yes' if r['identical'] else 'no'} |"
                  for r in agree]
        lines += [f"| **all** | {n} | **{ok / n:.2%}** | {max(r['max_gap_where_differs'] for r in agree):.2f} | "
                  f"median {statistics.median(r['common_prefix'] for r in agree):.0f} | "
                  f"{sum(r['identical'] for r in agree)}/{len(agree)} |", ""]
    timing = [r for r in rows if r["kind"] == "timing"]
    if timing:
        lines += ["## Relay wall time per backend", "",
                  "| backend | mode | problems | tokens | seconds | tok/s | relay / large time | large share | correct |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for backend in dict.fromkeys(r["backend"] for r in timing):
            base = sum(r["seconds"] for r in timing if r["backend"] == backend and r["mode"] == "large")
            for mode in ("large", "relay"):
                sel = [r for r in timing if r["backend"] == backend and r["mode"] == mode]
                secs, toks = sum(r["seconds"] for r in sel), sum(r["tokens"] for r in sel)
                share = sum(r["large_share"] * r["tokens"] for r in sel) / max(toks, 1)
                lines.append(f"| {backend} | {mode} | {len(sel)} | {toks} | {secs:.1f} | {toks / secs:.1f} | "
                             f"{secs / base:.2f} | {share:.0%} | {sum(r['correct'] for r in sel)}/{len(sel)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=10, help="GSM8K problems for the agreement check")
    ap.add_argument("--agreement-tokens", type=int, default=128)
    ap.add_argument("--relay-problems", type=int, default=3)
    ap.add_argument("--relay-tokens", type=int, default=256)
    ap.add_argument("--backends", default="llamacpp,hf,openai")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "backends_default_pair"))
    args = ap.parse_args(argv)
    console = Console()
    problems = load_problems(HERE / "data" / "gsm8k_test.jsonl", max(args.problems, args.relay_problems))
    rows = []
    if args.problems:
        rows += agreement(problems[: args.problems], args.agreement_tokens, args.threads, console)
    if args.relay_problems:
        rows += relay_timing(problems[: args.relay_problems], args.relay_tokens, args.threads,
                             args.backends.split(","), console)
    out = Path(args.out)
    if out.with_suffix(".jsonl").exists():  # keep the other part of an earlier run (agreement or timing)
        def part(r):
            return r["kind"], r.get("backend")
        rerun = {part(r) for r in rows}
        old = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in old if part(r) not in rerun] + rows
    out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report(rows, args)
    out.with_suffix(".md").write_text(text)
    console.print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
