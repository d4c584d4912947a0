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
        if parent_gone():
            sys.exit(0)


def die_with_starter() -> None:
    """Be sent SIGTERM when the process that started this one dies, whichever it is (vLLM's engine core: when its
    API server is killed, SIGKILL included, as Ray does to an agent's children when the agent goes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        starter = os.getppid()
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != starter:  # it died before the line above: nothing would tell this process
            os.kill(os.getpid(), signal.SIGTERM)


def parent_gone() -> bool:
    """The process that started this one has died, and this one was re-parented. The parent names itself
    in WARMSTART_PARENT_PID, so a warmstart that is PID 1 (in a container) is not mistaken for init."""
    expected = os.environ.get(PARENT_PID, "")
    return os.getppid() != int(expected) if expected.isdigit() else os.getppid() == 1


PARENT_PID = "WARMSTART_PARENT_PID"


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a process warmstart starts: tells it who its parent is (see parent_gone)."""
    return {**env, PARENT_PID: str(os.getpid())}
