"""Speculative decoding and relaying, alone and together, on GSM8K (greedy), methods interleaved per
problem so machine noise hits all alike.

    python evals/bench_speculative.py --limit 10 --draft-max 4 --repeats 1

Methods: large (plain), large+draft (the pair's small model drafts), large+lookup (prompt lookup),
relay, relay+draft. One large-model context is shared by all methods (its drafter is switched per
method); the draft model has a context of its own, separate from the relay's small model.
Writes evals/results/speculative_gsm8k.{jsonl,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams
from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.loader import load_pair
from relaygen_integrations.math_tasks import load_problems, math_prompt, numeric_match
from relaygen_integrations.registry import Registry, fetch
from relaygen_integrations.speculative import DraftModel, prompt_lookup

HERE = Path(__file__).resolve().parent
METHODS = ("large", "large+draft", "large+lookup", "relay", "relay+draft")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--draft-max", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(HERE / "results" / "speculative_gsm8k"))
    ap.add_argument("--summarise", action="store_true", help="only rebuild the table from OUT.jsonl")
    args = ap.parse_args(argv)
    if args.summarise:
        rows = [json.loads(line) for line in Path(args.out).with_suffix(".jsonl").read_text().splitlines()]
        text = report(rows, list(dict.fromkeys(r["method"] for r in rows)), args)
        Path(args.out).with_suffix(".md").write_text(text)
        print(text)
        return 0
    methods = [m for m in args.methods.split(",") if m]
    if "large" not in methods or any(m not in METHODS for m in methods):
        ap.error(f"--methods: a comma list of {', '.join(METHODS)}, including large")
    console = Console()
    options = dict(n_ctx=4096, n_threads=args.threads, n_gpu_layers=args.gpu_layers)
    pair = load_pair(speculative="off", **options)
    reg = Registry.load()
    draft_backend = LlamaCppBackend(fetch(reg.model(reg.pair(None).small)), **options)
    drafters = {"draft": DraftModel(draft_backend, max_tokens=args.draft_max), "lookup": prompt_lookup(args.draft_max)}
    problems = load_problems(HERE / "data" / "gsm8k_test.jsonl", args.start + args.limit)[args.start:]
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    rows = []
    with Progress(console=console) as bar:
        task = bar.add_task("problems x methods", total=len(problems) * len(methods) * args.repeats)
        for rep in range(args.repeats):
            for p in problems:
                for method in methods:
                    mode, _, spec = method.partition("+")
                    pair.large.set_drafter(drafters[spec] if spec else None)
                    engine = RelayEngine(pair.large, pair.small, pair.profile,
                                         RelayConfig(mode=mode, reasoning_end=pair.config.reasoning_end))
                    r = engine.generate(math_prompt(p["problem"]), params)
                    st = r.stats
                    rows.append({"repeat": rep, "id": p["id"], "method": method, "seconds": st.wall_seconds,
                                 "tokens": st.generated_tokens, "large_tokens": st.large.generated_tokens,
                                 "drafted": st.large.drafted_tokens, "accepted": st.large.accepted_draft_tokens,
                                 "switches": st.switches, "correct": numeric_match(r.text, p["answer"]),
                                 "text": r.text})
                    bar.advance(task)
    out = Path(args.out)
    out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report(rows, methods, args)
    out.with_suffix(".md").write_text(text)
    console.print(text)
    return 0


def report(rows, methods, args) -> str:
    base = {(r["repeat"], r["id"]): r for r in rows if r["method"] == "large"}
    lines = [f"# Speculative decoding x relaying, GSM8K {args.start}-{args.start + args.limit - 1}, greedy, "
             f"{args.max_tokens} tokens, draft-max {args.draft_max} ({platform.machine()}, {args.threads} threads, "
             f"gpu layers {args.gpu_layers}, {args.repeats} repeat(s))", "",
             "| method | correct | tokens/s | speed vs large (total time) | per-problem median [IQR] | acceptance | "
             "tokens by large | same text as without speculation |", "|---|---|---|---|---|---|---|---|"]
    total_base = sum(r["seconds"] for r in base.values())
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        secs, toks = sum(r["seconds"] for r in sel), sum(r["tokens"] for r in sel)
        ratios = sorted(base[(r["repeat"], r["id"])]["seconds"] / r["seconds"] for r in sel)
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        drafted, accepted = sum(r["drafted"] for r in sel), sum(r["accepted"] for r in sel)
        plain = {(r["repeat"], r["id"]): r for r in rows if r["method"] == m.partition("+")[0]}
        same = sum(r["text"] == plain[(r["repeat"], r["id"])]["text"] for r in sel if (r["repeat"], r["id"]) in plain)
        lines.append(f"| {m} | {sum(r['correct'] for r in sel)}/{len(sel)} | {toks / secs:.1f} | "
                     f"{total_base / secs:.2f}x | {q[1]:.2f}x [{q[0]:.2f}-{q[2]:.2f}] | "
                     f"{f'{accepted / drafted:.0%} of {drafted}' if drafted else '-'} | "
                     f"{sum(r['large_tokens'] for r in sel) / max(toks, 1):.0%} | {same}/{len(sel)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
