"""Why do `relay+exact` answers differ from the large model's own? Check that each first difference is a near-tie.

    python evals/exact_divergence.py evals/results/bench_check/gsm8k.jsonl --threads 2 \
        --out evals/results/bench_check/exact_divergence_gsm8k.md

`exact` keeps a small-model token only where the large model's own draw is that token, so with greedy decoding
its text is the large model's alone up to numerics: the large model reads the small model's sentence in one
batch, and on quantised weights a batch rounds logits differently from one-token decoding. For every problem
where the two texts differ, this finds the first token where they part (both texts tokenised by the large
model) and evaluates the large model once on the prompt plus the common prefix: if that is numerics, the two
candidate tokens are its top two and their logits are nearly tied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.math_tasks import data_file, load_problems, math_prompt
from relaygen_integrations.fetcher import fetch
from relaygen_integrations.registry import Registry


def differing(path: Path, method: str) -> list[tuple[dict, dict]]:
    """(large record, method record) for every problem where the texts differ, in problem order."""
    by: dict[str, dict[int, dict]] = {"large": {}, method: {}}
    for r in map(json.loads, path.open(encoding="utf-8")):
        if r.get("type") == "sample" and r["method"] in by and r["sample"] == 0:
            by[r["method"]][r["index"]] = r
    common = sorted(set(by["large"]) & set(by[method]))
    return [(by["large"][i], by[method][i]) for i in common if by["large"][i]["text"] != by[method][i]["text"]]


def first_difference(backend, prompt: str, a: str, b: str) -> dict:
    """The large model's view of the first token where texts ``a`` and ``b`` part."""
    ta, tb = (backend.tokenize(t.encode("utf-8")) for t in (a, b))
    n = 0
    while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
        n += 1
    if n == min(len(ta), len(tb)):
        return {"position": n}  # one text is a prefix of the other (a stop decided differently)
    backend.reset()
    rows, _ = backend.check_rows(backend.prompt_tokens(prompt) + ta[:n], 0)
    row = np.asarray(rows[0], dtype=np.float64)

    def rank(token: int) -> int:
        return int((row > row[token]).sum()) + 1
    return {"position": n, "large": ta[n], "other": tb[n], "gap": float(abs(row[ta[n]] - row[tb[n]])),
            "ranks": (rank(ta[n]), rank(tb[n])),
            "text": (backend.token_bytes(ta[n]).decode("utf-8", "replace"),
                     backend.token_bytes(tb[n]).decode("utf-8", "replace"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a `relaygen bench run` file with large and relay+exact answers")
    ap.add_argument("--method", default="relay+exact")
    ap.add_argument("--large", default="qwen2.5-coder-1.5b", help="the large model (registry name)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--limit", type=int, help="only the first N differing answers")
    args = ap.parse_args(argv)
    pairs = differing(args.results, args.method)[: args.limit]
    settings = next(r for r in map(json.loads, args.results.open()) if r.get("type") == "run")["settings"]
    problems = load_problems(data_file(settings["dataset"]))
    backend = LlamaCppBackend(fetch(Registry.load().model(args.large), progress=False), n_ctx=4096,
                              n_threads=args.threads)
    md = [f"# Where `{args.method}` parts from the large model alone", "",
          f"Made by `python evals/exact_divergence.py {args.results.as_posix()} --threads {args.threads}"
          + (f" --out {args.out.as_posix()}`" if args.out else "`") + ". The large model evaluated once on the "
          "prompt plus the common prefix; gap: its logit difference between the two texts' next tokens.", "",
          "| problem | grades (large, method) | token | large's token | method's token | ranks | logit gap |",
          "|---|---|---|---|---|---|---|"]
    gaps, top_two = [], 0
    for large, other in pairs:
        prompt = backend.chat_prompt([{"role": "user", "content": math_prompt(problems[large["index"]]["problem"])}])
        d = first_difference(backend, prompt, large["text"], other["text"])
        grades = f"{'right' if large['correct'] else 'wrong'}, {'right' if other['correct'] else 'wrong'}"
        if "gap" not in d:
            md.append(f"| {large['id']} | {grades} | {d['position']} | (one text ends first) | | | |")
            continue
        gaps.append(d["gap"])
        top_two += sorted(d["ranks"]) == [1, 2]
        md.append(f"| {large['id']} | {grades} | {d['position']} | {d['text'][0]!r} | {d['text'][1]!r} | "
                  f"{d['ranks'][0]}, {d['ranks'][1]} | {d['gap']:.3f} |")
        print(md[-1], file=sys.stderr)
    backend.close()
    if gaps:
        md += ["", f"{len(pairs)} answers differ; at the first difference the two tokens' logits are "
               f"{np.median(gaps):.3f} apart (median; max {max(gaps):.3f}); both are the model's top two in "
               f"{top_two} of {len(gaps)}."]
    text = "\n".join(md) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
