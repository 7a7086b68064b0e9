#!/usr/bin/env bash
# Install what the tests need (idempotent), then run the whole test suite offline-safe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
exec .venv/bin/python -m pytest -q "$@"
