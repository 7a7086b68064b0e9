#!/usr/bin/env bash
# Set up everything in ./.venv, fetch the default model pair, and run the demo.
#   bash scripts/setup.sh            # full setup + demo (downloads ~1.6 GB of model files once)
#   bash scripts/setup.sh --no-demo  # install only (what the test command uses)
# Environment:
#   RELAYGEN_BUILD_FROM_SOURCE=1     ignore ../shared/wheels: pip builds llama-cpp-python from source with
#                                    this machine's native kernels, as on a user's machine (~12 min, 2 cores)
#   RELAYGEN_VENV=DIR                the environment to set up (default: .venv)
#   RELAYGEN_EXTRAS=a,b              the extras to install (default: all of them)
#   RELAYGEN_PIP_EXTRA="spec ..."    more requirements installed with the package (e.g. a pinned lm-eval)
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=1
[[ "${1:-}" == "--no-demo" ]] && DEMO=0
PY=${PYTHON:-python3}
VENV=${RELAYGEN_VENV:-.venv}
EXTRAS=${RELAYGEN_EXTRAS:-llamacpp,hf,openai,lm-eval,litellm,serve,bench,docs,dev}
if [[ ! -x $VENV/bin/python ]]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
# llama-cpp-python has no binary wheel on PyPI; a prebuilt one is used when ../shared/wheels has it,
# otherwise it is built from source (about 12 minutes on 2 cores).
FIND_LINKS=()
if [[ -d ../shared/wheels && "${RELAYGEN_BUILD_FROM_SOURCE:-0}" != 1 ]]; then
  FIND_LINKS=(--find-links ../shared/wheels)
fi
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  if [[ ${#FIND_LINKS[@]} -eq 0 ]]; then
    # Built once into build/wheels (every environment of this checkout installs that wheel), never from
    # pip's cache, which keys a built wheel by its source only, not by the flags it was built with.
    if ! ls build/wheels/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
      # llama.cpp's AMX kernels segfault in batched evaluation on some AMX CPUs (llama.cpp#20824), and a
      # native build enables them wherever the CPU has AMX: build without them unless CMAKE_ARGS says otherwise.
      if [[ -z "${CMAKE_ARGS:-}" ]] && grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
        NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        export CMAKE_ARGS="-DCMAKE_C_FLAGS=\"$NO_AMX\" -DCMAKE_CXX_FLAGS=\"$NO_AMX\""
        echo "this CPU has AMX: building llama.cpp without its AMX kernels (CMAKE_ARGS=$CMAKE_ARGS)"
      fi
      echo "building llama-cpp-python 0.3.36 from source (about 12 minutes on 2 cores)..."
      "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps --no-cache-dir \
        -w build/wheels "llama-cpp-python==0.3.36"
    fi
    FIND_LINKS=(--find-links build/wheels)
  fi
  "${PIP[@]}" "${FIND_LINKS[@]}" "llama-cpp-python==0.3.36"
fi
# shellcheck disable=SC2086 # RELAYGEN_PIP_EXTRA is a list of requirement specs
"${PIP[@]}" "${FIND_LINKS[@]}" -e ".[$EXTRAS]" ${RELAYGEN_PIP_EXTRA:-}
if [[ $DEMO == 1 ]]; then
  "$VENV/bin/relaygen" models fetch qwen2.5-coder-1.5b+0.5b
  "$VENV/bin/relaygen" demo
fi
