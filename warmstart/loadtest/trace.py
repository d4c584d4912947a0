"""Request traces as the load test replays them: arrival time, prompt tokens and output tokens per request.

Two formats:
- `azure`: the Azure LLM inference traces (Splitwise, 2023): a CSV with the header
  `TIMESTAMP,ContextTokens,GeneratedTokens`, one row per request, timestamps like `2023-11-16 18:17:03.9799600`.
- `jsonl`: one JSON object per line, `{"t": 0.25, "prompt_tokens": 120, "output_tokens": 30}`, `t` in
  seconds from any origin; an optional `"model"` sends that request to another model.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FORMATS = ("azure", "jsonl")
_AZURE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d+))?$")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class TraceRequest:
    at: float  # seconds after the trace's first request
    prompt_tokens: int
    output_tokens: int
    model: str | None = None


def read_trace(path: Path, fmt: str) -> list[TraceRequest]:
    """Every request in the file, ordered by arrival, times relative to the first one."""
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; use one of {', '.join(FORMATS)}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TraceError(f"trace file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    rows = _azure(text, path) if fmt == "azure" else _jsonl(text, path)
    if not rows:
        raise TraceError(f"trace file {path} has no requests")
    rows.sort(key=lambda r: r[0])
    origin = rows[0][0]
    return [TraceRequest(at - origin, prompt, output, model) for at, prompt, output, model in rows]


def _azure(text: str, path: Path) -> list[tuple[float, int, int, str | None]]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
        raise TraceError(f"{path}:1: not an Azure trace: expected the header TIMESTAMP,ContextTokens,GeneratedTokens "
                         "(use --format jsonl for JSON lines)")
    rows: list[tuple[float, int, int, str | None]] = []
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < 3:
            raise TraceError(f"{path}:{n}: expected 3 columns, found {len(row)}")
        m = _AZURE_TIME.match(row[0].strip())
        if m is None:
            raise TraceError(f"{path}:{n}: bad TIMESTAMP {row[0]!r}")
        seconds = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        if m.group(2):
            seconds += float("0." + m.group(2))
        rows.append((seconds, _count(row[1], path, n, "ContextTokens"), _count(row[2], path, n, "GeneratedTokens"),
                     None))
    return rows


def _jsonl(text: str, path: Path) -> list[tuple[float, int, int, str | None]]:
    rows: list[tuple[float, int, int, str | None]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise TraceError(f"{path}:{n}: not valid JSON") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{path}:{n}: expected an object like "
                             '{"t": 0.25, "prompt_tokens": 120, "output_tokens": 30}')
        t = obj.get("t")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t in (float("inf"), float("-inf")):
            raise TraceError(f"{path}:{n}: 't' must be a number of seconds")
        model = obj.get("model")
        if model is not None and not isinstance(model, str):
            raise TraceError(f"{path}:{n}: 'model' must be a string")
        rows.append((float(t), _count(obj.get("prompt_tokens"), path, n, "prompt_tokens"),
                     _count(obj.get("output_tokens"), path, n, "output_tokens"), model))
    return rows


def _count(value: object, path: Path, line: int, name: str) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TraceError(f"{path}:{line}: {name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise TraceError(f"{path}:{line}: {name} must not be negative, got {number}")
    return number
