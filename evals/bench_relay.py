"""Large-only vs relay (vs small-only) on GSM8K, methods interleaved per problem so machine noise hits all alike.

    python evals/bench_relay.py --limit 10 --methods large,relay
    python evals/bench_relay.py --methods large,relay:PROFILE_JSON,relay:all-candidates,relay:paper-qwen3

``relay`` uses the pair's default cue profile; ``relay:P`` uses profile P (a built-in name or a JSON file).

Prints a table and writes per-answer records (JSONL) and the table (Markdown) under evals/results/.
Speed is the ratio of total wall time against large-only, measured in the same run; per-problem
ratios are summarised by median and interquartile range.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from relaygen_integrations import RelayEngine, SamplingParams, load_pair, load_profile
from relaygen_integrations.math_tasks import load_problems, math_prompt, numeric_match

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=None)
    ap.add_argument("--data", default=str(HERE / "data" / "gsm8k_test.jsonl"))
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--methods", default="large,relay", help="comma list of large, small, relay, relay:PROFILE")
    ap.add_argument("--start", type=int, default=0, help="index of the first problem")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1, help="repeat the whole interleaved pass (timing only)")
    ap.add_argument("--out", default=str(HERE / "results" / "relay_vs_large_gsm8k"))
    ap.add_argument("--summarise", metavar="JSONL", help="only re-summarise a results file: all passes, then each")
    args = ap.parse_args(argv)
    if args.summarise:
        return resummarise(Path(args.summarise))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "large" not in methods or any(m not in ("large", "small") and m.split(":")[0] != "relay" for m in methods):
        ap.error("--methods must include 'large' (the reference) and use only large, small, relay, relay:PROFILE")

    console = Console()
    problems = load_problems(args.data, args.start + args.limit)[args.start:]
    relay = load_pair(args.pair, profile=args.profile, n_ctx=4096, n_threads=args.threads, progress=True)

    def engine_for(method: str) -> RelayEngine:
        mode, _, profile = method.partition(":")
        return RelayEngine(relay.large, relay.small, load_profile(profile) if profile else relay.profile,
                           replace(relay.config, mode=mode))

    engines = {m: engine_for(m) for m in methods}
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, seed=0)
    records = []
    with Progress(console=console) as progress:
        task = progress.add_task("answering", total=len(problems) * len(methods) * args.repeats)
        for rep in range(args.repeats):
            for prob in problems:
                for method in methods:
                    r = engines[method].generate(math_prompt(prob["problem"]), params)
                    st = r.stats
                    records.append({
                        "repeat": rep, "id": prob["id"], "method": method, "answer": prob["answer"],
                        "correct": numeric_match(r.text, prob["answer"]), "wall_s": st.wall_seconds,
                        "tokens": st.generated_tokens, "large_tokens": st.large.generated_tokens,
                        "small_tokens": st.small.generated_tokens, "switches": st.switches,
                        "finish": st.finish_reason, "large_s": st.large.seconds, "small_s": st.small.seconds,
                        "large_evaluated": st.large.evaluated_tokens, "small_evaluated": st.small.evaluated_tokens,
                        "text": r.text,
                    })
                    progress.advance(task)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".jsonl"), "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    table, rows = summarise(records, methods)
    console.print(table)
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}"
    md = [f"# {Path(args.data).stem}: problems {args.start}..{args.start + len(problems) - 1}, greedy, "
          f"max_tokens {args.max_tokens}",
          "", f"Command: `python evals/bench_relay.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
          f"Machine: {machine}; repeats: {args.repeats}; default profile: {relay.profile.name}; run at "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
          "| method | correct | total time (s) | speed vs large (total) | per-problem speed: median [IQR] "
          "| tokens by large | switches/answer | tokens/small segment |",
          "|---|---|---|---|---|---|---|---|"]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    console.print(f"wrote {out.with_suffix('.jsonl')} and {out.with_suffix('.md')}")
    return 0


def resummarise(path: Path) -> int:
    """Print the summary of a finished run, over all passes and for each pass alone (to spot a disturbed one)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    methods = list(dict.fromkeys(r["method"] for r in records))
    console = Console()
    console.print(summarise(records, methods)[0])
    for rep in sorted({r["repeat"] for r in records}):
        table, _ = summarise([r for r in records if r["repeat"] == rep], methods)
        table.title = f"pass {rep + 1} alone"
        console.print(table)
    return 0


def summarise(records, methods):
    table = Table(title="relay benchmark")
    cols = ["method", "correct", "total time (s)", "speed vs large (total)", "per-problem speed: median [IQR]",
            "tokens by large", "switches/answer", "tokens/small segment"]
    for c in cols:
        table.add_column(c)
    by = {m: [r for r in records if r["method"] == m] for m in methods}
    base = {(r["repeat"], r["id"]): r["wall_s"] for r in by["large"]}
    n_problems = len({r["id"] for r in records})
    rows = []
    for m in methods:
        rs = by[m]
        first = [r for r in rs if r["repeat"] == min(x["repeat"] for x in rs)]  # greedy: every pass answers alike
        total = sum(r["wall_s"] for r in rs)
        ratios = sorted(base[(r["repeat"], r["id"])] / r["wall_s"] for r in rs)
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        tokens = sum(r["tokens"] for r in rs)
        large = sum(r["large_tokens"] for r in rs)
        switches = sum(r["switches"] for r in rs)
        small = sum(r["small_tokens"] for r in rs)
        row = [m, f"{sum(r['correct'] for r in first)}/{n_problems}", f"{total:.1f}",
               f"{sum(base.values()) / total:.2f}x", f"{q[1]:.2f}x [{q[0]:.2f}-{q[2]:.2f}]",
               f"{large / tokens:.0%}" if tokens else "-", f"{switches / len(rs):.1f}" if m.startswith("relay") else "-",
               f"{small / switches:.0f}" if m.startswith("relay") and switches else "-"]
        rows.append(row)
        table.add_row(*row)
    return table, rows


if __name__ == "__main__":
    sys.exit(main())
