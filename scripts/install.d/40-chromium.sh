#!/usr/bin/env bash
# Chromium for the browser tests (tests/e2e): the Debian packages chromium and chromium-driver, driven by
# Playwright for Python with executable_path=/usr/bin/chromium (Playwright's own browser download is never used).
# Idempotent: returns at once when both are installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
printf '\033[1m[install]\033[0m %s\n' "installing chromium and chromium-driver (Debian packages) for the browser tests" >&2
SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo -E); fi
export DEBIAN_FRONTEND=noninteractive
# other installs may hold the dpkg lock for a while: wait for it rather than fail
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
if ! apt-cache show chromium >/dev/null 2>&1 || ! apt-cache show chromium-driver >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
fi
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
