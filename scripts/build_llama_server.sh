#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` once, from the llama.cpp sources vendored in the llama-cpp-python
# source package (the same llama.cpp as the installed llama-cpp-python), only the server target; cached in
# build/llama-server/bin/llama-server. The tests that run it skip, saying why, where no C++ compiler or cmake
# is found. Usage: bash scripts/build_llama_server.sh   (idempotent; about 8.5 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
OUT=build/llama-server
if [[ -x $OUT/bin/llama-server ]]; then
  exit 0
fi
for tool in cmake c++; do
  if ! command -v $tool >/dev/null; then
    echo "build_llama_server: no $tool found: the llama-server tests will be skipped" >&2
    exit 0
  fi
done
PY=${RELAYGEN_VENV:-.venv}/bin/python
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
echo "building llama.cpp's llama-server from llama-cpp-python $VERSION's sources (a few minutes)..."
"$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$SRC"
tar -xzf "$SRC"/llama_cpp_python-$VERSION.tar.gz -C "$SRC"
LLAMA="$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp"
FLAGS=()
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then  # as scripts/setup.sh: llama.cpp#20824
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  FLAGS=(-DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX")
fi
cmake -S "$LLAMA" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON "${FLAGS[@]}" ${RELAYGEN_LLAMA_SERVER_CMAKE:-} >/dev/null
cmake --build "$SRC/build" --target llama-server -j "$(nproc)" >/dev/null
mkdir -p "$OUT/bin"
cp "$SRC/build/bin/llama-server" "$OUT/bin/llama-server.tmp"
mv "$OUT/bin/llama-server.tmp" "$OUT/bin/llama-server"
echo "built $OUT/bin/llama-server"
