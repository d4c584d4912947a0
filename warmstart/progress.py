"""What a long operation is doing, said on stderr while it runs: the one progress display of the command line
(`warm`, `bench`, `simulate`, `quantize`), kept off stdout so tables and `--json -` stay machine-readable.

On a terminal it is one line rewritten in place; elsewhere (a pipe, a CI log) a line per new step and, within a
step, at most one every few seconds. A quick operation prints nothing: nothing is said during the first second.
A thread repeats the latest step with the time spent, so a step that reports nothing for a minute (an engine
starting) is still seen to move.

Code deep inside an operation reports through `step()`, which goes to the display the command opened (and
nowhere when none is open, as in library use).

`WARMSTART_PROGRESS=off` silences it (scripts that want stderr for errors alone); `WARMSTART_PROGRESS=always`
shows every step from the start, the first second included (logs that should say everything, tests)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

TTY_EVERY = 0.1  # a terminal line is rewritten at most this often
LOG_EVERY = 5.0  # elsewhere, the same step is said again at most this often


class Progress:
    def __init__(self, label: str, out: TextIO | None = None, after: float = 1.0, every: float | None = None,
                 now: Callable[[], float] = time.monotonic, tick: bool = True) -> None:
        mode = os.environ.get("WARMSTART_PROGRESS", "").lower()
        self.label = label
        self.out = out if out is not None else sys.stderr
        self.tty = _isatty(self.out)
        self.off = mode == "off"
        self.after, self.now = (0.0 if mode == "always" else after), now
        self.every = every if every is not None else (TTY_EVERY if self.tty else LOG_EVERY)
        self.began = now()
        self.what: str | None = None
        self.counts = ""
        self.said_what: str | None = None  # the step last said, and when
        self.said_at = -1e18
        self.on_line = False  # a terminal line is open (not ended with a newline)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True) if tick else None

    def __enter__(self) -> Progress:
        global _active
        self._previous, _active = _active, self
        if self._ticker is not None:
            self._ticker.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        global _active
        _active = self._previous
        self.close()

    def close(self) -> None:
        """Done: the ticker stops and a terminal line is ended."""
        self._stop.set()
        if self._ticker is not None and self._ticker.is_alive():
            self._ticker.join()
        with self._lock:
            self._end_line()

    def update(self, what: str, done: float | None = None, total: float | None = None) -> None:
        """The step now under way, and how far into it (`done` of `total`)."""
        with self._lock:
            self.what = what
            self.counts = _counts(done, total)
            self._maybe_say(last=done is not None and total is not None and 0 < total <= done)

    def line(self, text: str) -> None:
        """A line that stays (a result along the way), said at once."""
        if self.off:
            return
        with self._lock:
            self._end_line()
            self._write(f"{text}\n")

    def _tick(self) -> None:
        while not self._stop.wait(min(self.every, 0.5)):
            with self._lock:
                self._maybe_say()

    def _maybe_say(self, last: bool = False) -> None:
        """Say the step unless it is too soon; `last`: its last count, said on a terminal whenever it comes."""
        now = self.now()
        if self.off or self.what is None or now - self.began < self.after:
            return
        if self.what == self.said_what and now - self.said_at < self.every and not (last and self.tty):
            return
        self.said_what, self.said_at = self.what, now
        text = f"{self.label}: {(self.what + self.counts).strip()} ({now - self.began:.1f} s)"
        if self.tty:
            self._write(f"\r{text}\x1b[K")
            self.on_line = True
        else:
            self._write(text + "\n")

    def _end_line(self) -> None:
        if self.on_line:
            self._write("\n")
            self.on_line = False

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):  # stderr closed: the operation goes on unseen
            pass


_active: Progress | None = None


def step(what: str, done: float | None = None, total: float | None = None) -> None:
    """Say the step now under way on the display the running command opened, if any."""
    if _active is not None:
        _active.update(what, done, total)


def say(text: str) -> None:
    """A line that stays, on the open display (or on stderr when none is open)."""
    if _active is not None:
        _active.line(text)
    elif os.environ.get("WARMSTART_PROGRESS", "").lower() != "off":
        print(text, file=sys.stderr, flush=True)


def _counts(done: float | None, total: float | None) -> str:
    if done is None:
        return ""
    if total:
        return f" {_number(done)}/{_number(total)} ({100 * done / total:.0f}%)"
    return f" {_number(done)}"


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
