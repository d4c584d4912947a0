"""vLLM's start-up log read as phases: pure functions over log lines and the times they arrived.

vLLM prints a line when each step of its start ends; the time between two such lines is a phase:

| phase       | ends at the line                                   | what happened                                   |
|-------------|----------------------------------------------------|-------------------------------------------------|
| import      | "non-default args" (API server)                    | interpreter, torch, vLLM and FastAPI imported   |
| engine_init | "Starting to load model"                           | config, engine-core and worker processes up     |
| load        | "Loading weights took" / "Model loading took"      | weights read into device memory                 |
| compile     | "torch.compile takes" / "Graph capturing finished" | torch.compile, CUDA-graph capture               |
|             | / "Warming up done." (CPU)                         |                                                 |
| kv_init     | "KV cache size"                                    | memory profiling, KV-cache allocation           |
| warmup      | "init engine (profile, create kv cache, warmup"    | the rest of engine start-up (warm-up runs)      |
| ready       | the first successful health check (not a log line) | API server routes, uvicorn, first answer        |

Markers are matched on message text, which has been stable across vLLM 0.6-0.32; a line that never
comes (older or newer vLLM) merges its phase into the next one instead of inventing a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from warmstart.engines.base import COMPILE, ENGINE_INIT, IMPORT, KV_INIT, LOAD, WARMUP

MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (IMPORT, re.compile(r"non-default args:|vLLM API server version")),
    (ENGINE_INIT, re.compile(r"Starting to load model")),
    (LOAD, re.compile(r"Loading weights took|Model loading took")),
    # GPU: torch.compile, then CUDA graphs after the KV cache; CPU: "Warming up done." ends its compile run
    (COMPILE, re.compile(r"torch\.compile takes|Graph capturing finished|Compiling a graph for|Warming up done\.")),
    (KV_INIT, re.compile(r"KV cache size:|# (?:GPU|CPU) blocks:")),
    (WARMUP, re.compile(r"init engine \(profile, create kv cache, warmup model\) took")),
)
# The line that says where the next phase starts, for the live view (`warmstart ps`).
NEXT_PHASE = {IMPORT: ENGINE_INIT, ENGINE_INIT: LOAD, LOAD: KV_INIT, COMPILE: KV_INIT, KV_INIT: WARMUP}
_ERROR = re.compile(r"\b\w*(?:Error|Exception)\b: .*")


def marker_of(line: str) -> str | None:
    """The phase a log line ends, or None."""
    for phase, pattern in MARKERS:
        if pattern.search(line):
            return phase
    return None


@dataclass
class PhaseClock:
    """Turns (line, arrival time) into finished phases: `on_done(name, seconds)`, `on_enter(name)`."""

    started: float
    on_done: Callable[[str, float], None]
    on_enter: Callable[[str], None]
    last: float = field(init=False)
    # a pre-initialized runtime imported before the model came: its import line ends no phase
    imported_before: bool = False
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last = self.started

    def feed(self, line: str, at: float) -> str | None:
        phase = marker_of(line)
        if phase is None:
            return None
        if phase == IMPORT and (IMPORT in self.seen or self.imported_before):
            return None
        self.on_done(phase, at - self.last)
        self.seen.append(phase)
        self.last = at
        nxt = NEXT_PHASE.get(phase)
        if nxt:
            self.on_enter(nxt)
        return phase


def last_error(log_text: str) -> str | None:
    """The last `SomeError: message` in a log: what a failed start names."""
    found = _ERROR.findall(log_text)
    return found[-1][:400] if found else None


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete lines of a log chunk, and the incomplete tail to keep for the next chunk."""
    *lines, tail = buffer.split(b"\n")
    return [line.decode("utf-8", "replace").rstrip("\r") for line in lines], tail
