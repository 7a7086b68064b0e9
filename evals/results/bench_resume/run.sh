#!/usr/bin/env bash
# Issue 31's benchmark: resuming after a cut, on the committed protocol (greedy, methods interleaved per problem).
# Resumable: rerun this script and each run continues where its file ends. large, relay and relay+check of the
# same protocol are in evals/results/bench_check (byte-identical greedy texts: see evals/same_texts.py).
set -euo pipefail
cd "$(dirname "$0")/../../.."
R=${RELAYGEN:-.venv/bin/relaygen}
$R bench run --data gsm8k --methods large,relay+check+resume,relay+exact+resume --limit 100 --max-tokens 512 \
  --threads 2 --no-agreement --out evals/results/bench_resume/gsm8k.jsonl
$R bench run --data math500 --methods large,relay+check+resume,relay+exact+resume --limit 50 --max-tokens 1024 \
  --threads 2 --no-agreement --out evals/results/bench_resume/math500.jsonl
