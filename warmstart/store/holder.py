"""The RAM tier's holder process: maps model files and mlocks them, so their pages stay in the page
cache (any process that maps or reads the files then gets them from memory), until its stdin closes.

    python -m warmstart.store.holder FILE...

Prints one JSON line: {"locked": BYTES, "seconds": S} once every page is resident and locked, or
{"error": TEXT, "errno": N} and exits 1. Dies with its parent (PR_SET_PDEATHSIG), which frees the lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import signal
import sys
import time

from warmstart.engines.child import parent_gone

_PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def _say(**message: object) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent_gone():
        return 0
    started = time.monotonic()
    locked = 0
    for path in argv:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            _say(error=f"cannot open {path}: {exc.strerror}", errno=exc.errno)
            return 1
        size = os.fstat(fd).st_size
        if size == 0:
            os.close(fd)
            continue
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        os.close(fd)  # the mapping keeps the file
        if addr in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            _say(error=f"cannot map {path}: {os.strerror(err)}", errno=err)
            return 1
        libc.madvise(addr, size, mmap.MADV_SEQUENTIAL)  # read it ahead in large pieces
        if libc.mlock(addr, size) != 0:  # faults every page in (from disk if needed) and pins it
            err = ctypes.get_errno()
            _say(error=f"cannot lock {path} ({size} bytes) in memory: {os.strerror(err)}", errno=err)
            return 1
        locked += size
    _say(locked=locked, seconds=time.monotonic() - started)
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass
    except (OSError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
