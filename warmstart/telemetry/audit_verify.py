"""Reading the audit log back: check its hash chain and name the first bad line; select records for reports."""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warmstart.telemetry.audit_format import (
    GENESIS,
    HEAD,
    NotARecord,
    line_digest,
    read_head,
    read_record,
    record_hash,
    segments,
)


@dataclass(frozen=True)
class Line:
    file: str
    number: int  # 1-based, within its file
    raw: bytes
    terminated: bool  # ends with a newline
    record: dict[str, Any] | None
    problem: NotARecord | None = None  # why the line is not a record


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    kind: str  # edited, deleted, reordered, truncated, invalid
    message: str

    def where(self) -> str:
        return f"{self.file} line {self.line}" if self.line is not None else self.file


@dataclass
class Verification:
    directory: Path
    files: list[str] = field(default_factory=list)
    records: int = 0  # records checked and intact, up to the first problem
    first_seq: int | None = None
    last_seq: int | None = None
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "directory": str(self.directory),
            "files": self.files,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "problem": None if self.problem is None else {
                "file": self.problem.file, "line": self.problem.line, "kind": self.problem.kind,
                "message": self.problem.message},
            "notes": self.notes,
        }


def regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def read_lines(directory: Path) -> Iterator[Line]:
    """Every line of every file of the log, in order (a file that is not a regular file is skipped)."""
    for path in segments(directory):
        if not regular(path):
            continue
        data = path.read_bytes()
        pieces = data.split(b"\n")
        terminated_all = data.endswith(b"\n")
        if terminated_all or not data:
            pieces.pop()
        for i, raw in enumerate(pieces):
            terminated = terminated_all or i < len(pieces) - 1
            read = read_record(raw)
            if isinstance(read, NotARecord):
                yield Line(path.name, i + 1, raw, terminated, None, read)
            else:
                yield Line(path.name, i + 1, raw, terminated, read)


def verify(directory: Path, lines: list[Line] | None = None) -> Verification:
    """Walk the chain from the first record; stop at the first line that breaks it. `lines`: the log as
    read_lines(directory) already read it (a report verifies exactly the lines it exports)."""
    result = Verification(directory=directory, files=[p.name for p in segments(directory)])
    for path in segments(directory):
        if not regular(path):
            result.problem = Problem(path.name, None, "invalid", "is not a regular file (a link to a device "
                                     "or a folder?): the log cannot be read from it")
            return result
    if lines is None:
        try:
            lines = list(read_lines(directory))
        except OSError as exc:
            result.problem = Problem(Path(exc.filename or directory).name, None, "invalid",
                                     f"cannot be read: {exc.strerror or exc}")
            return result
    acknowledged: dict[tuple[str, int, str], Line] = {}
    later: dict[int, int] = {}  # seq -> index of the last line holding it
    for index, line in enumerate(lines):
        if line.record is None:
            continue
        later[line.record["seq"]] = index
        if line.record["event"] == "recovery" and isinstance(line.record.get("torn"), list):
            for torn in line.record["torn"]:
                if isinstance(torn, dict) and type(torn.get("line")) is int:
                    acknowledged[(str(torn.get("file")), torn["line"], str(torn.get("sha256")))] = line

    expected_seq, expected_prev = 1, GENESIS
    last: Line | None = None

    def fail(line: Line, kind: str, message: str) -> Verification:
        result.problem = Problem(line.file, line.number, kind, message)
        return result

    for index, line in enumerate(lines):
        record = line.record
        if record is None:
            ack = acknowledged.get((line.file, line.number, line_digest(line.raw)))
            if ack is not None:
                result.notes.append(f"{line.file} line {line.number}: {len(line.raw)} bytes left by an interrupted "
                                    f"write, acknowledged by the recovery record seq {ack.record['seq']}")  # type: ignore[index]
                continue
            if index == len(lines) - 1 and not line.terminated:
                return fail(line, "truncated", (
                    f"the last record is incomplete ({len(line.raw)} bytes, no newline): a write was interrupted "
                    f"(crash, kill -9 or a full disk); the {result.records} records before it are intact, and the "
                    "next record written will acknowledge this line and continue the chain"))
            why = line.problem or NotARecord("invalid", "it is not a record")
            if why.kind == "edited":
                return fail(line, "edited", f"the line was edited: {why.reason}")
            return fail(line, "invalid", f"not a valid audit record: {why.reason}; the line was edited or damaged")
        seq = record["seq"]
        if record_hash(record) != record["hash"]:
            return fail(line, "edited", f"record seq {seq} was edited: its contents do not match its hash")
        if seq > expected_seq:
            if later.get(expected_seq, -1) > index:
                return fail(line, "reordered", f"record seq {seq} comes before seq {expected_seq}: "
                                               "records were reordered")
            missing = f"seq {expected_seq}" if seq == expected_seq + 1 else f"seq {expected_seq}-{seq - 1}"
            return fail(line, "deleted", f"record {missing} missing before record seq {seq}: records were deleted")
        if seq < expected_seq:
            return fail(line, "reordered", f"record seq {seq} comes after seq {expected_seq - 1}: "
                                           "records were reordered or duplicated")
        if record["prev"] != expected_prev:
            before = "the start of the log" if last is None else f"{last.file} line {last.number}"
            return fail(line, "edited", f"record seq {seq} does not chain to {before} (its prev hash differs): "
                                        "a record was replaced")
        if not line.terminated:
            result.notes.append(f"{line.file} line {line.number}: the last record is whole but has no newline "
                                "(an interrupted write); the next writer adds it")
        result.records += 1
        result.first_seq = result.first_seq or seq
        result.last_seq = seq
        expected_seq, expected_prev, last = seq + 1, record["hash"], line

    head = read_head(directory)
    if head is None:
        if last is not None:
            result.problem = Problem(HEAD, None, "truncated", f"{HEAD} is missing or unreadable, so a cut at the "
                                     "end of the log cannot be ruled out")
        return result
    if head["seq"] > expected_seq - 1:
        end = "the log is empty" if last is None else (
            f"the log ends at record seq {expected_seq - 1} ({last.file} line {last.number})")
        result.problem = Problem(last.file if last else HEAD, last.number if last else None, "truncated",
                                 f"{end} but {HEAD} says record seq {head['seq']} was written: "
                                 "records after it were removed (the log was truncated)")
    else:
        holder = lines[later[head["seq"]]] if head["seq"] in later else None
        if holder is None or holder.record is None or holder.record["hash"] != head["hash"]:
            result.problem = Problem(HEAD, None, "edited", f"{HEAD} names record seq {head['seq']} with a hash "
                                     "that no record in the log has: the log was rewritten")
    return result


# ---- selecting records for show and export ----------------------------------------------------------

def record_time(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record.get("time", "")))
    except ValueError:
        return None


def select(lines: Iterable[Line], since: datetime | None = None, until: datetime | None = None,
           model: str | None = None, events: set[str] | None = None) -> list[dict[str, Any]]:
    """Whole records of `lines` (read_lines), in log order (lines that are not records are skipped; `verify`
    reports them)."""
    out = []
    for line in lines:
        record = line.record
        if record is None:
            continue
        when = record_time(record)
        if since is not None and (when is None or when < since):
            continue
        if until is not None and (when is None or when >= until):
            continue
        if model is not None and record.get("model") != model:
            continue
        if events is not None and record.get("event") not in events:
            continue
        out.append(record)
    return out


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A point in time: ISO 8601 (`2026-11-22`, `2026-11-22T13:00`, with Z or an offset; no zone = UTC),
    or how long ago (`90m`, `24h`, `7d`). Raises ValueError with a message for the user."""
    from warmstart.durations import parse_duration

    text = text.strip()
    now = now or datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        ago = parse_duration(text)
    except ValueError:
        ago = -1.0
    if ago < 0 or ago == float("inf"):
        raise ValueError(f"{text!r} is not a time: use ISO 8601 (2026-11-22 or 2026-11-22T13:00Z) "
                         "or how long ago (90m, 24h, 7d)")
    from datetime import timedelta

    return now - timedelta(seconds=ago)
