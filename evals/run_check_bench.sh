#!/usr/bin/env bash
# The checked relay's benchmark (issue 17): the default pair, greedy, on this machine, the committed report's
# protocol (GSM8K test 0-99 at 512 tokens, MATH-500 0-49 at 1,024, methods interleaved per problem).
# Resumable: rerun to continue where it stopped (pause: touch evals/results/bench_check/<file>.jsonl.pause).
#   1. GSM8K 0-49: the table's methods and the threshold sweep (relay+check is the profile's tau, 0.244). The
#      committed results also hold relay+tau=0.01+handback=0.4, the early hand-back measured at commit 74feb79
#      and then removed: it did not help (evals/results/bench_check/README.md)
#   2. GSM8K 50-99: the table's methods
#   3. MATH-500 0-49: the table's methods
# Measured for step 1: about 6 min a GSM8K problem (9 methods) on a 2-core host decoding the large model at
# 108 ms a token (the costs line of evals/results/bench_check/gsm8k.jsonl); steps 2 and 3 have 5 methods.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
RELAYGEN=${RELAYGEN:-.venv/bin/relaygen}
DIR=evals/results/bench_check
TABLE=large,relay,relay+check,relay-all+check,relay+exact
SWEEP=relay+tau=0.01,relay+tau=0.05,relay+tau=0.1
mkdir -p $DIR
$RELAYGEN bench run --data gsm8k --methods $TABLE,$SWEEP --limit 50 --max-tokens 512 --threads 2 --out $DIR/gsm8k.jsonl
$RELAYGEN bench run --data gsm8k --methods $TABLE --limit 100 --max-tokens 512 --threads 2 --out $DIR/gsm8k.jsonl
$RELAYGEN bench run --data math500 --methods $TABLE --limit 50 --max-tokens 1024 --threads 2 --out $DIR/math500.jsonl
$RELAYGEN bench report $DIR/gsm8k.jsonl $DIR/math500.jsonl --out $DIR/README.md \
    --title "Checked relay: Qwen2.5-Coder 1.5B/0.5B on a 2-core CPU"
