#!/usr/bin/env bash
# The cluster tests (tests/integration/test_cluster.py) run a real multi-node Ray cluster on this machine:
# the `cluster` extra (Ray, pinned).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m pip install -q -e ".[cluster]"
