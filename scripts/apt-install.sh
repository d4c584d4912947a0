#!/usr/bin/env bash
# Installs Debian packages for the test set-up: scripts/apt-install.sh "WHAT FOR" PACKAGE...
# Runs apt-get update only when a package is not known yet; uses sudo when not root.
set -euo pipefail
why=$1; shift
printf '\033[1m[install]\033[0m %s\n' "installing $* (Debian packages) for $why" >&2
SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo -E); fi
export DEBIAN_FRONTEND=noninteractive
# other installs may hold the dpkg lock for a while: wait for it rather than fail
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
for package in "$@"; do
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
    break
  fi
done
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "$@" >/dev/null
