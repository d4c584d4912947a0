"""When pytest itself is stopped (SIGTERM: a CI job's timeout, `kill`), the servers and engines its tests started go
with it. Tests start them in sessions of their own, so neither the terminal's signal nor pytest's death reaches them,
and fixtures' teardown does not run: they would keep their ports, memory and files after the run."""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType

import pytest


def descendants(pid: int) -> list[int]:
    """Every process whose chain of parents leads to `pid` (Linux's /proc), children before their own."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])  # "pid (comm) state ppid ...": comm may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), ()):
            found.append(child)
            todo.append(child)
    return found


def _stop_descendants(signum: int, _frame: FrameType | None) -> None:
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)  # a server shuts down cleanly on it and stops its engines
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # and pytest ends as the signal asked


def pytest_configure(config: pytest.Config) -> None:
    if os.path.isdir("/proc"):
        signal.signal(signal.SIGTERM, _stop_descendants)
