"""The container tools warmstart drives (podman, buildah, mmdebstrap): one call each, failures as ImageError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from warmstart.errors import ImageError

_HINTS = {
    "podman": "install podman (Debian/Ubuntu: apt-get install podman; see docs/image.md)",
    "buildah": "install buildah (Debian/Ubuntu: apt-get install buildah; see docs/image.md)",
    "mmdebstrap": "install mmdebstrap (Debian/Ubuntu: apt-get install mmdebstrap), or pass --base IMAGE",
}


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ImageError(f"{tool} is not installed: {_HINTS.get(tool, 'install it')}")
    return path


def run(tool: str, args: Sequence[str], *, timeout: float = 1800, env: dict[str, str] | None = None,
        capture: bool = True) -> str:
    """Runs TOOL ARGS; returns its stdout. ImageError with the tool's last lines when it fails."""
    argv = [require(tool), *args]
    try:
        done = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ImageError(f"`{tool} {' '.join(args[:2])}` took more than {timeout:.0f} s and was stopped") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-8:])
        raise ImageError(f"`{tool} {' '.join(args[:3])} ...` failed (exit {done.returncode}): {tail}")
    return done.stdout or ""


def image_exists(ref: str) -> bool:
    argv = [require("podman"), "image", "exists", ref]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True).returncode == 0


def inspect_image(ref: str) -> dict[str, Any]:
    data = json.loads(run("podman", ["image", "inspect", ref]))
    return data[0]


def image_bytes(ref: str) -> int:
    """The image's size unpacked, as `podman images` shows it (the sum of its layers)."""
    return int(inspect_image(ref)["Size"])


def layers(ref: str) -> list[str]:
    return list(inspect_image(ref)["RootFS"]["Layers"])


def import_tarball(tarball: Path, ref: str) -> None:
    run("podman", ["import", "--quiet", str(tarball), ref])


def remove_image(ref: str) -> None:
    subprocess.run([require("podman"), "rmi", "--force", ref], stdin=subprocess.DEVNULL, capture_output=True)
