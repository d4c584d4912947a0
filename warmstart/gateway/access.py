"""The access log: one line per generation request once it is answered (or refused), on stderr, as text or
as one JSON object per line (`server.access_log`). It says what the metrics cannot for one request: which
replica, whether it found the model warm, how long it was held, its status, tokens and duration."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import TextIO

_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


@dataclass
class Access:
    method: str
    path: str
    model: str
    status: int
    start: str  # warm or cold
    wait_ms: float
    duration_ms: float
    ttft_ms: float | None
    stream: bool
    replica: str | None
    client: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def tokens(answer: bytes) -> tuple[int | None, int | None]:
    """Prompt and generated tokens from the `usage` of an engine's answer (or its last stream event)."""
    if b'"usage"' not in answer:
        return None, None
    prompt, completion = _PROMPT.search(answer), _COMPLETION.search(answer)
    return (int(prompt.group(1)) if prompt else None), (int(completion.group(1)) if completion else None)


class AccessLog:
    """Lines are gathered and written together at most `FLUSH_S` later, as nginx's `access_log ... buffer= flush=`
    does: a write to stderr per request is a system call on every request's path."""

    FLUSH_S = 0.25

    def __init__(self, fmt: str, out: TextIO | None = None) -> None:
        self.fmt = fmt
        self.enabled = fmt != "off"
        self.out = out
        self._lines: list[str] = []
        self._flush_at: asyncio.TimerHandle | None = None

    def write(self, entry: Access) -> None:
        if not self.enabled:
            return
        self._lines.append(self.line(entry))
        if self._flush_at is None:
            try:
                self._flush_at = asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)
            except RuntimeError:  # no event loop (a test calling it directly): at once
                self.flush()

    def line(self, entry: Access) -> str:
        if self.fmt == "json":
            return json.dumps({"time": round(time.time(), 3), **entry.__dict__}, separators=(",", ":")) + "\n"
        extra = "" if entry.ttft_ms is None else f" ttft_ms={entry.ttft_ms:.1f}"
        if entry.completion_tokens is not None:
            extra += f" tokens={entry.prompt_tokens}+{entry.completion_tokens}"
        return (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {entry.method} {entry.path} {entry.model} "
                f"status={entry.status} {entry.start} wait_ms={entry.wait_ms:.1f} duration_ms={entry.duration_ms:.1f}"
                f"{extra}{' stream' if entry.stream else ''} replica={entry.replica or '-'} "
                f"client={entry.client or '-'}\n")

    def flush(self) -> None:
        self._flush_at = None
        if not self._lines:
            return
        text, self._lines = "".join(self._lines), []
        out = self.out or sys.stderr
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):  # stderr closed or full: the lines are lost, the requests are not
            pass

    def close(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
        self.flush()
