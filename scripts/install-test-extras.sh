#!/usr/bin/env bash
# What the tests need beyond Python packages: each part is a script in scripts/install.d/, run in order.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in scripts/install.d/*.sh; do
  [ -e "$part" ] || continue
  bash "$part"
done
