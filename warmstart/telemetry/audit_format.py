"""The audit log's record format, shared by its writer (audit.py) and its verifier (audit_verify.py).

A line is a record only if its bytes are exactly the canonical JSON of what they parse to (sorted keys, no
spaces, ASCII, no NaN); `hash` is the sha256 of the record without `hash`. Segments are
audit-NNNNNN.jsonl; head.json holds the seq and hash of the last record written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 1
GENESIS = "0" * 64
HEAD = "head.json"
SEGMENT = re.compile(r"^audit-(\d{6,})\.jsonl$")


# ---- the record format, shared with the verifier ------------------------------------------------

def canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True)
class NotARecord:
    """Why a line is not a record: `edited` when it parses to a record but is not the bytes the writer
    wrote for it, `invalid` when it is no record at all."""

    kind: str  # edited | invalid
    reason: str


class _Refused(ValueError):
    """A line the JSON parser would accept but a record never holds, raised from the parser's hooks."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Refused(f"the key {json.dumps(key)} appears twice in one object, so the hash covers only one "
                           "of its values")
        obj[key] = value
    return obj


def _constant(name: str) -> float:
    raise _Refused(f"it holds {name}, which is not a JSON number")


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"it holds the number {text[:40]}, out of range (it reads as infinity)")
    return value


def read_record(raw: bytes) -> dict[str, Any] | NotARecord:
    """The record on one line, or why the line is not one (its hash is not checked here). A record's
    line is exactly canonical(record): the hash chain then covers the bytes as written."""
    try:
        text = raw.decode()  # strictly UTF-8: json.loads would also guess UTF-16 and UTF-32
    except UnicodeDecodeError:
        return NotARecord("invalid", "it is not UTF-8 text")
    try:
        obj = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_number)
    except _Refused as exc:
        return NotARecord("edited", str(exc))
    except RecursionError:
        return NotARecord("invalid", "it is nested too deeply to be a record")
    except ValueError as exc:
        return NotARecord("invalid", f"it is not JSON ({exc})")
    if not isinstance(obj, dict):
        return NotARecord("invalid", f"it is a JSON {_JSON_TYPES.get(type(obj), 'value')}, not an object")
    if type(obj.get("seq")) is not int or not isinstance(obj.get("event"), str):
        return NotARecord("invalid", "it has no integer seq or no event")
    if not all(isinstance(obj.get(k), str) and len(obj[k]) == 64 for k in ("hash", "prev")):
        return NotARecord("invalid", "it has no 64-digit hash or prev")
    try:
        written = canonical(obj)
    except (ValueError, RecursionError):
        return NotARecord("invalid", "it is nested too deeply to be a record")
    if written != raw:
        return NotARecord("edited", f"record seq {obj['seq']} is not in the writer's canonical form (keys "
                                    "reordered, spaces added or characters escaped otherwise), so its bytes are "
                                    "not the bytes its hash covers")
    return obj


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """The record on one line, or None when the line is not a record at all (its hash is not checked)."""
    record = read_record(raw)
    return record if isinstance(record, dict) else None


def segment_name(index: int) -> str:
    return f"audit-{index:06d}.jsonl"


def segments(directory: Path) -> list[Path]:
    """The log's files in chain order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := SEGMENT.match(name))]
    return [directory / name for _, name in sorted(found)]


def read_head(directory: Path) -> dict[str, Any] | None:
    try:
        head = json.loads((directory / HEAD).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(head, dict) and type(head.get("seq")) is int and isinstance(head.get("hash"), str):
        return head
    return None


def utc_iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def line_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
