#!/usr/bin/env bash
# Set up everything in ./.venv, fetch the default model pair, and run the demo.
#   bash scripts/setup.sh            # full setup + demo (downloads ~1.6 GB of model files once)
#   bash scripts/setup.sh --no-demo  # install only (what the test command uses)
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=1
[[ "${1:-}" == "--no-demo" ]] && DEMO=0
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# llama-cpp-python has no binary wheel on PyPI; a prebuilt one is used when ../shared/wheels has it,
# otherwise pip builds it from source (about 12 minutes on 2 cores).
FIND_LINKS=()
[[ -d ../shared/wheels ]] && FIND_LINKS=(--find-links ../shared/wheels)
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "installing llama-cpp-python (builds from source if no wheel is at hand)..."
  .venv/bin/python -m pip install -q --disable-pip-version-check "${FIND_LINKS[@]}" "llama-cpp-python==0.3.36"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "${FIND_LINKS[@]}" -e ".[llamacpp,hf,openai,lm-eval,litellm,bench,dev]"
if [[ $DEMO == 1 ]]; then
  .venv/bin/relaygen models fetch qwen2.5-coder-1.5b+0.5b
  .venv/bin/relaygen demo
fi
