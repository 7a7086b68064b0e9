#!/usr/bin/env bash
# The benchmark behind evals/results/bench/README.md: the default pair, greedy, on this machine.
# Resumable: rerun to continue where it stopped. Half of each data set first, so a report over both
# exists early; then the rest. Several hours on 2 cores. Pause it for other work with
#   touch evals/results/bench/<data>.jsonl.pause   (remove the file to continue)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
RELAYGEN=${RELAYGEN:-.venv/bin/relaygen}
$RELAYGEN bench run --data gsm8k --limit 50 --threads 2 --out evals/results/bench/gsm8k.jsonl
$RELAYGEN bench run --data math500 --limit 25 --max-tokens 1024 --threads 2 --out evals/results/bench/math500.jsonl
$RELAYGEN bench run --data gsm8k --limit 100 --threads 2 --out evals/results/bench/gsm8k.jsonl
$RELAYGEN bench run --data math500 --limit 50 --max-tokens 1024 --threads 2 --out evals/results/bench/math500.jsonl
$RELAYGEN bench report evals/results/bench/gsm8k.jsonl evals/results/bench/math500.jsonl \
    --out evals/results/bench/README.md --title "RelayGen benchmark: Qwen2.5-Coder 1.5B/0.5B on a 2-core CPU"
