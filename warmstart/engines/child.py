"""What every engine process warmstart starts does first; standard library only, so it adds nothing to the
engine's measured import phase."""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent() -> None:
    """Be sent SIGTERM when warmstart dies (even by kill -9), and leave at once if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            sys.exit(0)
