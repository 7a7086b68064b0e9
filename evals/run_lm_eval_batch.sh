#!/usr/bin/env bash
# lm-eval's batch_size on the default pair (issue 18): GSM8K test 0-49 through `lm_eval --model relaygen`,
# relay, greedy, batch_size=4 (four requests evaluated together in llama.cpp's shared contexts) then
# batch_size=1 (one at a time, today's engine), one after the other on the same machine; the whole command's
# wall time of each goes to evals/results/lm_eval_batch/wall_s.tsv. Then compare accuracy and the relay stats:
#   python evals/compare_lm_eval_runs.py bs1=evals/results/lm_eval_batch/bs1 bs4=evals/results/lm_eval_batch/bs4
# Pause the checked-relay benchmark first (touch evals/results/bench_check/gsm8k.jsonl.pause): the two share
# the CPU. About 25 minutes a run on a 2-core host.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=evals/results/lm_eval_batch
mkdir -p $OUT
for bs in ${BATCH_SIZES:-4 1}; do
  t0=$(date +%s.%N)
  .venv/bin/lm_eval --model relaygen \
    --model_args pretrained=qwen2.5-coder-1.5b+0.5b,mode=relay,check=off,n_threads=2 --batch_size $bs \
    --tasks relaygen_gsm8k_cot --include_path evals/tasks --apply_chat_template \
    --limit 50 --output_path $OUT/bs$bs --log_samples
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\n' "$bs" "$(python3 -c "print(round($t1 - $t0, 1))")" "$(date -u +%FT%TZ)" >> $OUT/wall_s.tsv
done
