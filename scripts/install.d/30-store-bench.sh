#!/usr/bin/env bash
# The store's loader tests and `warmstart bench load` compare against safetensors, runai-model-streamer
# and tensorizer, which need torch: the `bench` extra (torch pinned to a CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m pip install -q -e ".[bench]"
