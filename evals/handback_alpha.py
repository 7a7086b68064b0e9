"""Would an early hand-back on the small side help the checked relay? (issue 17; BiLD's fallback rule: the small
model returns control before writing a token whose own top probability is below alpha.)

Teacher-forces both models over the relay answers of a benchmark file (its ``segments`` say which model wrote
which characters) and, for each small-model reasoning sentence, finds where a check at tau (the large model's
probability of the small token below tau and not its own greedy choice) and a hand-back at alpha (the small
model's top probability below alpha) would first step in. Reported per (tau, alpha): how many answers lost
against the large model alone and how many both-right answers get an intervention, and the share of small
tokens kept (each sentence on its own: text after an intervention would differ in a real run). Whether the
large model then recovers is for the benchmark to say (``relay+tau=P+handback=A``).

    python evals/handback_alpha.py evals/results/bench/gsm8k.jsonl --method relay --threads 2 \
        --right 20 --out evals/results/handback_alpha.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from relaygen_integrations.core.sampling import target_logprobs
from relaygen_integrations.loader import load_backend
from relaygen_integrations.math_tasks import data_file, load_problems, math_prompt

TAUS = (0.0, 0.01, 0.05, 0.1, 0.25)
ALPHAS = (0.0, 0.2, 0.3, 0.4, 0.5)


def position_stats(backend, context: list[int], first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``context[first:]``: its probability, whether it is the greedy choice, and the top probability."""
    prob, greedy, top = [], [], []
    done = 0
    for rows in backend.logit_rows(context, first):
        targets = np.asarray(context[first + done: first + done + len(rows)])
        logprobs, is_top = target_logprobs(rows, targets)
        prob.append(np.exp(logprobs))
        greedy.append(is_top)
        top.append(np.exp(target_logprobs(rows, rows.argmax(axis=1))[0]))
        done += len(targets)
    return np.concatenate(prob), np.concatenate(greedy), np.concatenate(top)


def sentences_of(record: dict, tokenize) -> tuple[list[int], list[tuple[int, int]]]:
    """The answer's tokens (segment by segment) and the (start, end) token spans of its small reasoning sentences."""
    tokens, spans, char = [], [], 0
    for role, stage, _, chars in record["segments"]:
        piece = tokenize(record["text"][char: char + chars].encode("utf-8"))
        char += chars
        if role == "small" and stage == "reasoning":
            spans.append((len(tokens), len(tokens) + len(piece)))
        tokens += piece
    return tokens, spans


def first_intervention(span, stats, tau: float, alpha: float) -> tuple[int | None, str | None]:
    """Where in the sentence the check (tau) or the hand-back (alpha) steps in first, and which did."""
    p_large, greedy_large, top_small = stats
    for i in range(*span):
        if top_small[i] < alpha:
            return i, "alpha"
        if p_large[i] < tau and not greedy_large[i]:
            return i, "tau"
    return None, None


def answer_outcome(spans, stats, tau, alpha):
    """(first intervention over the whole answer, its kind, small tokens kept, small tokens)."""
    first, kind, kept, total = None, None, 0, 0
    for span in spans:
        at, why = first_intervention(span, stats, tau, alpha)
        total += span[1] - span[0]
        kept += (at if at is not None else span[1]) - span[0]
        if at is not None and first is None:
            first, kind = at, why
    return first, kind, kept, total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a relaygen bench results file with the method and 'large'")
    ap.add_argument("--method", default="relay")
    ap.add_argument("--large", default="qwen2.5-coder-1.5b")
    ap.add_argument("--small", default="qwen2.5-coder-0.5b")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--right", type=int, default=None,
                    help="score only the lost answers, the first N both-right ones and no others (as the issue's "
                         "evidence did; teacher-forcing all of them takes about half a minute each)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    records = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    samples = [r for r in records if r.get("type") == "sample"]
    large_right = {r["id"]: r["correct"] for r in samples if r["method"] == "large"}
    relay = [r for r in samples if r["method"] == args.method and r["id"] in large_right]
    if args.right is not None:
        both = [r for r in relay if r["correct"] and large_right[r["id"]]][: args.right]
        relay = [r for r in relay if (large_right[r["id"]] and not r["correct"]) or r in both]
    problems = {p["id"]: p for p in load_problems(data_file(records[0]["settings"]["dataset"]))}
    large = load_backend(args.large, n_ctx=4096, n_threads=args.threads)
    small = load_backend(args.small, n_ctx=4096, n_threads=args.threads)
    t0, answers = time.perf_counter(), []
    for n, rec in enumerate(relay, 1):
        prompt_ids = large.prompt_tokens(large.chat_prompt([{"role": "user",
                                                             "content": math_prompt(problems[rec["id"]]["problem"])}]))
        tokens, spans = sentences_of(rec, large.tokenize)
        tokens = tokens[: large.n_ctx - len(prompt_ids)]
        spans = [(a, min(b, len(tokens))) for a, b in spans if a < len(tokens)]
        p_large, greedy_large, _ = position_stats(large, prompt_ids + tokens, len(prompt_ids))
        _, _, top_small = position_stats(small, prompt_ids + tokens, len(prompt_ids))
        kind = "lost" if large_right[rec["id"]] and not rec["correct"] else (
            "right" if large_right[rec["id"]] else ("gained" if rec["correct"] else "wrong"))
        answers.append(dict(kind=kind, spans=spans, stats=(p_large, greedy_large, top_small)))
        print(f"\r{n}/{len(relay)} answers scored", end="", flush=True)
    print()
    grid = []
    for tau in TAUS:
        for alpha in ALPHAS:
            row = dict(tau=tau, alpha=alpha, lost=0, right=0, kept=0, small=0)
            for a in answers:
                first, _, kept, total = answer_outcome(a["spans"], a["stats"], tau, alpha)
                row["kept"] += kept
                row["small"] += total
                if first is not None and a["kind"] in ("lost", "right"):
                    row[a["kind"]] += 1
            row["kept_share"] = round(row["kept"] / max(1, row["small"]), 4)
            grid.append(row)
    counts = {k: sum(a["kind"] == k for a in answers) for k in ("lost", "right", "gained", "wrong")}
    result = {"results": str(args.results), "method": args.method, "answers": counts,
              "seconds": round(time.perf_counter() - t0, 1), "grid": grid}
    print(f"answers: {counts}")
    print("tau    alpha  lost-touched  right-touched  small kept")
    for row in grid:
        print(f"{row['tau']:<6} {row['alpha']:<6} {row['lost']:>5}/{counts['lost']:<7} "
              f"{row['right']:>5}/{counts['right']:<8} {row['kept_share']:.1%}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
