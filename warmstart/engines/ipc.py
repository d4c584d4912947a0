"""A folder for an engine's Unix sockets. A socket's path is at most 107 bytes (sun_path), and vLLM names its
ZMQ sockets VLLM_RPC_BASE_PATH/UUID4 (37 bytes more): under a deep data directory that is too long, and vLLM
stops in engine_init with "ZMQError: ipc path ... is longer than ...". Such a data directory gets a short
private folder in the system's temporary directory instead, one per data directory, removed when its engine
closes (if nothing is left in it)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from warmstart.errors import EngineError

SUN_PATH_MAX = 107  # bytes of a socket's path, less its terminating NUL
UUID_NAME = 37  # "/" and a uuid4, vLLM's name for each socket


def socket_dir(preferred: Path, room: int = UUID_NAME) -> Path:
    """`preferred` when a socket `room` bytes longer fits, else a folder of this user's (mode 0700) under the
    temporary directory, named after `preferred`, made if needed; EngineError when that name is taken by
    something else (another user's folder, a link, a folder others can write)."""
    if len(os.fsencode(preferred)) + room <= SUN_PATH_MAX:
        return preferred
    name = f"warmstart-{os.getuid()}-{hashlib.sha256(os.fsencode(preferred)).hexdigest()[:12]}"
    base = next((Path(d) for d in (tempfile.gettempdir(), "/tmp")
                 if len(os.fsencode(Path(d) / name)) + room <= SUN_PATH_MAX), Path("/tmp"))
    short = base / name
    try:
        short.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise EngineError(f"cannot make {short} for the engine's sockets ({exc.strerror}): {preferred} is too "
                          "long for a socket's path; use a shorter data directory") from None
    info = short.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise EngineError(f"{short} (for the engine's sockets: {preferred} is too long for a socket's path) is "
                          "not a private folder of this user; remove it, or use a shorter data directory")
    return short


def release_socket_dir(preferred: Path, used: Path) -> None:
    """Remove `used`, the short folder `socket_dir(preferred)` made, if it is one (every server would otherwise
    leave one behind in the temporary directory): first the socket files in it that no process has bound any
    more (vLLM leaves its ZMQ sockets behind, so the folder was never empty), then the folder when nothing else
    is left in it. A socket another engine of the same data directory still listens on stays, and so does the
    folder."""
    if used == preferred:
        return
    bound = bound_socket_paths()
    with contextlib.suppress(OSError):  # gone already
        for entry in used.iterdir():
            with contextlib.suppress(OSError):
                if bound is not None and stat.S_ISSOCK(entry.lstat().st_mode) and str(entry) not in bound:
                    entry.unlink()
    with contextlib.suppress(OSError):  # gone already, or something still in it
        used.rmdir()


def bound_socket_paths() -> set[str] | None:
    """The paths of the Unix sockets bound in this network namespace (Linux's /proc/net/unix, whose last column
    is the path), or None where that cannot be read: then nothing counts as stale."""
    try:
        lines = Path("/proc/net/unix").read_text(errors="replace").splitlines()[1:]
    except OSError:
        return None
    return {fields[7] for fields in (line.split(None, 7) for line in lines) if len(fields) == 8}
