#!/usr/bin/env bash
# podman, buildah, runc and mmdebstrap for the image tests and `warmstart bench image`: images are
# built from a Debian base made by mmdebstrap (no registry needed) and run without a Docker daemon.
# runc, not crun: crun needs CAP_SYS_RESOURCE, which containers like CI's lack (see docs/image.md).
# Idempotent: returns at once when all are installed.
set -euo pipefail
need=()
for tool in podman buildah runc mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
[ ${#need[@]} -eq 0 ] && exit 0
# netavark and iptables publish a port; slirp4netns, uidmap and fuse-overlayfs serve rootless users;
# catatonit is the init of `podman run --init`
"$(dirname "$0")/../apt-install.sh" "the image tests" podman buildah runc mmdebstrap \
  netavark aardvark-dns iptables slirp4netns uidmap fuse-overlayfs catatonit
for tool in podman buildah runc mmdebstrap; do command -v "$tool" >/dev/null; done
