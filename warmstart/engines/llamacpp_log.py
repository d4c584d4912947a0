"""llama.cpp server's start-up log read as phases: pure functions over its log lines.

llama-server (here from the xllamacpp wheel, or a system build) logs each step of its start, every line
stamped with the time since its log began (`M.SS.mmm.uuu`, at verbosity 4, `-lv 4`). The time between
two marker lines is a phase, measured on the server's own clock:

| phase   | from the line                               | to the line                               |
|---------|---------------------------------------------|-------------------------------------------|
| load    | the first line (server init)                | "llama_context: constructing llama_context" |
| kv_init | "constructing llama_context"                | "llama threadpool init" (older: "warming up the model") |
| warmup  | "llama threadpool init"                     | "listening on" (slots and chat template set up too) |

(Without both "threadpool" and "warming up" lines, "load_model: initializing" ends kv_init.)

A router's (llama-server --models-preset) instances log through the router, each line prefixed `[PORT] `:
`instance_line` picks one instance's lines and strips the prefix.

The worker reports `kv_init` and `warmup` as timed here and `load` as the rest of the server's start
(its log begins a moment after the start). `load` is weights (mmap, or a copy into repacked buffers),
tokenizer and metadata; `kv_init` the
context: KV cache, compute buffers, thread pool; `warmup` the decodes the server runs before it listens:
its warm-up run (two tokens through the whole graph, unless `--no-warmup`) and, in every start since
llama.cpp's context probe (`common_context_can_seq_rm`, which decodes two tokens to learn whether the
context can drop a sequence's tail), that probe too.
Markers are message text from llama.cpp b11549 (xllamacpp 2026.10.11549) and b11669 (Debian's
llama.cpp-tools 0.7.0, a system binary); a marker that never comes
merges its phase into the next one instead of inventing a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from warmstart.engines.base import KV_INIT, LOAD, WARMUP

_STAMP = re.compile(r"^(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) ")
# (the phase a line ends, the pattern); the phase after it starts on the same line
MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (LOAD, re.compile(r"llama_context: constructing llama_context")),
    # the thread pool is the context's last step, with or without a warm-up run after it
    (KV_INIT, re.compile(r"llama threadpool init|warming up the model|srv +load_model: initializing, n_slots")),
    # xllamacpp's server logs it from `init`, llama-server's own main from `llama_server`
    (WARMUP, re.compile(r"srv +(?:init|llama_server): listening on ")),
)
NEXT_PHASE = {LOAD: KV_INIT, KV_INIT: WARMUP}
_ERROR = re.compile(r"^\d+\.\d{2}\.\d{3}\.\d{3} E (?:\w+ +)?(.*)$")


def stamp_of(line: str) -> float | None:
    """Seconds since the server's log began, from a line's `M.SS.mmm.uuu` prefix; None without one."""
    m = _STAMP.match(line)
    if m is None:
        return None
    minutes, seconds, ms, us = (int(g) for g in m.groups())
    return minutes * 60 + seconds + ms / 1e3 + us / 1e6


def instance_line(line: str, port: int) -> str | None:
    """A line of a router's log written by its instance on `port`, without the `[PORT] ` prefix; else None."""
    prefix = f"[{port}] "
    return line[len(prefix):] if line.startswith(prefix) else None


def marker_of(line: str) -> str | None:
    """The phase a log line ends, or None."""
    for phase, pattern in MARKERS:
        if pattern.search(line):
            return phase
    return None


def error_of(line: str) -> str | None:
    """The message of an error line (level E), without its stamp: what a failed start names."""
    m = _ERROR.match(line)
    return m.group(1).strip()[:400] if m else None


@dataclass
class PhaseClock:
    """Turns stamped log lines into finished phases (`on_done(name, seconds)`) and the phase now
    running (`on_enter(name)`). The first stamped line starts `load`."""

    on_done: Callable[[str, float], None]
    on_enter: Callable[[str], None]
    last: float | None = None
    seen: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def feed(self, line: str) -> str | None:
        at = stamp_of(line)
        if at is None:
            return None
        error = error_of(line)
        if error is not None:
            self.errors.append(error)
        if self.last is None:
            self.last = at
            self.on_enter(LOAD)
        phase = marker_of(line)
        if phase is None or phase in self.seen:
            return None
        if phase == KV_INIT and LOAD not in self.seen:  # no context line: load ran until here
            self.seen.append(LOAD)
        self.on_done(phase, at - self.last)
        self.seen.append(phase)
        self.last = at
        nxt = NEXT_PHASE.get(phase)
        if nxt:
            self.on_enter(nxt)
        return phase

    @property
    def finished(self) -> bool:
        return WARMUP in self.seen
