#!/usr/bin/env bash
# Prometheus and promtool for the telemetry tests (a real server scrapes a real warmstart).
# Idempotent: returns at once when both are installed. The packaged service is not started.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
"$(dirname "$0")/../apt-install.sh" "the telemetry tests" prometheus
command -v prometheus >/dev/null && command -v promtool >/dev/null
