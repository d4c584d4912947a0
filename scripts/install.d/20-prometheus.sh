#!/usr/bin/env bash
# Prometheus and promtool for the telemetry tests (a real server scrapes a real warmstart).
# Idempotent: returns at once when both are installed. The packaged service is not started.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
printf '\033[1m[install]\033[0m %s\n' "installing prometheus (Debian package) for the telemetry tests" >&2
SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo -E); fi
export DEBIAN_FRONTEND=noninteractive
# other installs may hold the dpkg lock for a while: wait for it rather than fail
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
if ! apt-cache show prometheus >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
fi
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null
