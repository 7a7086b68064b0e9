#!/usr/bin/env bash
# Install what the tests need (idempotent), then run the whole test suite offline-safe: every test in
# .venv (lm-eval 0.4.x), then the lm-eval tests again in .venv-lm-eval-0.5 with lm-eval's 0.5 pre-release.
#   bash scripts/test.sh                 # both
#   bash scripts/test.sh tests/core -x   # only these pytest arguments, in .venv
# RELAYGEN_BUILD_FROM_SOURCE=1 builds llama-cpp-python from source in both environments (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
bash scripts/build_llama_server.sh  # llama.cpp's own server, for tests/backends/test_llama_server.py (cached)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet  # the manual (docs/): a broken link or page fails the run
if [[ $# -gt 0 ]]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
.venv/bin/python -m pytest -q
echo "== the lm-eval tests again, against lm-eval's 0.5 pre-release =="
RELAYGEN_VENV=.venv-lm-eval-0.5 RELAYGEN_EXTRAS=llamacpp,hf,lm-eval \
  RELAYGEN_PIP_EXTRA="lm-eval==0.5.0.dev1 pytest>=8 gguf>=0.10" bash scripts/setup.sh --no-demo
.venv-lm-eval-0.5/bin/python -c "import lm_eval.api.model as m, importlib.metadata as md; \
assert md.version('lm-eval').startswith('0.5'), md.version('lm-eval')"
exec .venv-lm-eval-0.5/bin/python -m pytest -q tests/integrations/test_lm_eval.py tests/integrations/test_lm_eval_tasks.py \
  tests/test_bad_inputs.py -k lm_eval
