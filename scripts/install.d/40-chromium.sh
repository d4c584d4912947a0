#!/usr/bin/env bash
# Chromium for the browser tests (tests/e2e): the Debian packages chromium and chromium-driver, driven by
# Playwright for Python with executable_path=/usr/bin/chromium (Playwright's own browser download is never used).
# Idempotent: returns at once when both are installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
"$(dirname "$0")/../apt-install.sh" "the browser tests" chromium chromium-driver fonts-dejavu-core
command -v chromium >/dev/null && command -v chromedriver >/dev/null
