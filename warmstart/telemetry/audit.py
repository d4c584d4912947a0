"""The audit log of model initializations: append-only JSON Lines, hash-chained, fsynced per record.

The audit directory holds:
    audit-000001.jsonl, audit-000002.jsonl, ...  segments in order; the highest one is appended to
    head.json                                     seq and hash of the last record written (shows a cut tail)
    .lock                                         flock'ed by each writer, so two processes never interleave

Each line is one record in canonical JSON (sorted keys, no spaces, ASCII, no NaN), and a line is a
record only if its bytes are exactly the canonical form of what they parse to: the chain covers the
bytes as written, so a duplicate key, reordered keys or added whitespace read as tampering, never as
the record they parse to. `hash` is the sha256 of the record without `hash`; `prev` is the `hash` of
the record before it (64 zeros before the first); `seq` counts from 1 across segments, so a rotation
keeps one chain. A line torn by a crash (the log ends without a newline) is closed and acknowledged
by a `recovery` record from the next writer, which continues the chain from the last whole record.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart import __version__
from warmstart.errors import AuditError, StoreError
from warmstart.store.digest import DigestCache
from warmstart.store.files import folder_files
from warmstart.store.manifest import ManifestStore, manifest_name
from warmstart.telemetry.audit_format import (
    FORMAT,
    GENESIS,
    HEAD,
    SEGMENT,
    canonical,
    line_digest,
    parse_record,
    read_head,
    record_hash,
    segment_name,
    segments,
    utc_iso,
)

if TYPE_CHECKING:
    from warmstart.clock import Clock
    from warmstart.config import ModelConfig
    from warmstart.engines.base import Engine
    from warmstart.pool.entry import Attempt
    from warmstart.telemetry.metrics import Metrics

log = logging.getLogger("warmstart.audit")

_MAX_ERROR = 4000  # characters of error text kept in a record
_SCAN = 64 * 1024  # bytes read from the end of the log to find its last record


# ---- the writer -----------------------------------------------------------------------------------

@dataclass
class _Tail:
    """Where the log stands: its last whole record, and what follows it in the newest segment."""

    seq: int = 0
    hash: str = GENESIS
    segment: Path | None = None
    size: int = 0
    # lines after the last record in the newest segment: (line number, bytes); crash debris or damage
    torn: list[tuple[int, bytes]] = field(default_factory=list)
    open_line: bool = False  # the newest segment does not end with a newline


def _last_record(path: Path, size: int) -> tuple[dict[str, Any] | None, list[bytes], bool]:
    """The last record in a file, the lines after it, and whether the file ends inside a line."""
    window = _SCAN
    while True:
        with open(path, "rb") as f:
            f.seek(max(0, size - window))
            data = f.read(min(size, window))
        whole = window >= size
        open_line = not data.endswith(b"\n")
        lines = data.split(b"\n")
        if not open_line:
            lines.pop()  # the empty piece after the final newline
        if not whole:
            lines = lines[1:]  # the window may start inside a line
        after: list[bytes] = []
        for raw in reversed(lines):
            record = parse_record(raw)
            if record is not None:
                return record, after[::-1], open_line
            after.append(raw)
        if whole:
            return None, after[::-1], open_line
        window *= 4


def _scan(directory: Path) -> _Tail:
    files = segments(directory)
    if not files:
        return _Tail()
    tail = _Tail(segment=files[-1], size=files[-1].stat().st_size)
    for path in reversed(files):
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            continue
        record, after, open_line = _last_record(path, st.st_size)
        if path == files[-1]:
            tail.open_line = open_line
            if after:
                total = path.read_bytes().count(b"\n") + (1 if open_line else 0)
                first = total - len(after) + 1
                tail.torn = [(first + i, raw) for i, raw in enumerate(after)]
        if record is not None:
            tail.seq, tail.hash = record["seq"], record["hash"]
            break
    return tail


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, data: bytes) -> None:
    """Append all of `data` and fsync; on failure, cut the file back to where it was if possible."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        before = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)  # leave no half record behind; if this fails, the next writer repairs
            raise
    finally:
        os.close(fd)


class AuditWriter:
    """Appends records to the chain; thread-safe and safe against other processes on the same directory."""

    def __init__(self, directory: Path, rotate_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()

    def append(self, fields: Mapping[str, Any], wall: float) -> dict[str, Any]:
        """Write one record (adding time, seq, prev, hash); durable when this returns. Raises OSError."""
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except FileExistsError:  # something that is not a folder holds its name
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.directory)) from None
            with _locked(self.directory):
                tail = _scan(self.directory)
                head = read_head(self.directory)
                head_seq = head["seq"] if head else 0
                seq, prev = tail.seq, tail.hash
                if head_seq > tail.seq:
                    log.error("the audit log in %s ends at record %d but %d were written: records were removed; "
                              "run `warmstart audit verify`", self.directory, tail.seq, head_seq)
                    seq = head_seq  # keep the gap visible to the verifier
                if tail.torn or tail.open_line:
                    assert tail.segment is not None
                    data = b"\n" if tail.open_line else b""
                    if tail.torn and head_seq <= tail.seq:
                        # debris after the last durable record: a write cut short by a crash
                        recovery = self._seal({"event": "recovery", "torn": [
                            {"file": tail.segment.name, "line": n, "bytes": len(raw), "sha256": line_digest(raw)}
                            for n, raw in tail.torn]}, wall, seq + 1, prev)
                        data += canonical(recovery) + b"\n"
                        seq, prev = recovery["seq"], recovery["hash"]
                        log.warning("audit log: acknowledged %d line(s) torn by an interrupted write in %s",
                                    len(tail.torn), tail.segment.name)
                    _append(tail.segment, data)
                    tail.size += len(data)
                record = self._seal(fields, wall, seq + 1, prev)
                line = canonical(record) + b"\n"
                target = self._segment_for(tail, len(line))
                _append(target, line)
                self._write_head(record, target)
                return record

    def _seal(self, fields: Mapping[str, Any], wall: float, seq: int, prev: str) -> dict[str, Any]:
        record = {"v": FORMAT, "time": utc_iso(wall), **fields, "seq": seq, "prev": prev}
        # as JSON reads it back (tuples as lists, keys as strings), so the line is the canonical form of
        # what the verifier parses; raises ValueError for NaN or infinity before anything is written
        record = json.loads(canonical(record))
        record["hash"] = record_hash(record)
        return record

    def _segment_for(self, tail: _Tail, size: int) -> Path:
        if tail.segment is not None and (tail.size == 0 or tail.size + size <= self.rotate_bytes):
            return tail.segment
        index = 1
        if tail.segment is not None:
            m = SEGMENT.match(tail.segment.name)
            assert m is not None
            index = int(m.group(1)) + 1
        path = self.directory / segment_name(index)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640))
        _fsync_dir(self.directory)  # the new file survives a crash before its first record does
        return path

    def _write_head(self, record: Mapping[str, Any], segment: Path) -> None:
        head = self.directory / HEAD
        tmp = self.directory / (HEAD + ".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump({"seq": record["seq"], "hash": record["hash"], "file": segment.name}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, head)
        except OSError as exc:
            # the record itself is durable; a stale head only weakens the check for a cut tail
            log.warning("audit log: could not update %s: %s", head, exc.strerror or exc)


# ---- the pool's audit sink ----------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsDigest:
    sha256: str
    size: int
    cached: bool  # every file's digest was trusted by its stat, none was read for this record
    hashed_at: float  # when the bytes were read (the oldest of a folder's files)
    sealed: bool = False  # every file's digest came from the image's seal (checked at build), none was read

    def fields(self) -> dict[str, Any]:
        """The record's digest fields: the digest, and what it rests on for this start."""
        return {"sha256": self.sha256, "size": self.size, "sha256_cached": self.cached,
                # stat: size, mtime, ctime, inode and device unchanged since sha256_hashed_at (a write moves
                # ctime, which no user process can set back); hashed: read for this record
                # seal: the image's seal, checked when it was built (warmstart.store.seal)
                "sha256_basis": "seal" if self.sealed else "stat" if self.cached else "hashed",
                "sha256_hashed_at": utc_iso(self.hashed_at)}


def weights_digest(cache: DigestCache, path: Path) -> WeightsDigest:
    """The weights' digest; a folder (several files) gets one digest of its files' digests and relative names
    (`store.files.folder_files`: hidden files and folders, such as a download's cache, are not the model's)."""
    if not path.is_dir():
        d = cache.digest(path)
        return WeightsDigest(d.sha256, d.size, d.cached, d.hashed_at, d.sealed)
    manifest, size, cached, sealed, hashed_at = hashlib.sha256(), 0, True, True, math.inf
    for rel, file in folder_files(path):
        d = cache.digest(file)
        manifest.update(f"{d.sha256}  {rel}\n".encode())
        size, cached, hashed_at = size + d.size, cached and d.cached, min(hashed_at, d.hashed_at)
        sealed = sealed and d.sealed
    return WeightsDigest(manifest.hexdigest(), size, cached, 0.0 if math.isinf(hashed_at) else hashed_at, sealed)


class AuditLog:
    """The pool's AuditSink: one record per start, unload and failure, durable before `record` returns."""

    def __init__(self, directory: Path, *, clock: Clock, metrics: Metrics | None = None,
                 digests: DigestCache | None = None, required: bool = True,
                 rotate_bytes: int = 16 * 1024 * 1024, manifests: ManifestStore | None = None) -> None:
        self.writer = AuditWriter(directory, rotate_bytes)
        self.clock = clock
        self.metrics = metrics
        self.digests = digests or DigestCache(None)
        self.required = required
        self.host = socket.gethostname()
        self.manifests = manifests  # where a start's record finds the model's last accuracy eval

    @property
    def directory(self) -> Path:
        return self.writer.directory

    async def record(self, event: str, *, model: ModelConfig, path: Path | None, replica: Attempt,
                     engine: Engine, outcome: str, error: str | None = None, reason: str | None = None,
                     seconds: float | None = None) -> None:
        fields: dict[str, Any] = {
            "event": event,
            "model": model.name,
            "replica": replica.id,
            "trigger": replica.trigger,
            "engine": model.engine,
            "options": dict(model.options),
            "path": str(path) if path is not None else model.path,
            "replica_started": utc_iso(replica.created_wall),
            # a start's phases; an unload or failure names the start it ends by `replica`
            "phases": [{"phase": name, "seconds": round(s, 6)} for name, s in replica.report.phases]
            if event == "start" else [],
            "seconds": None if seconds is None else round(seconds, 6),
            "outcome": outcome,
            "error": None if error is None else error[:_MAX_ERROR],
            "reason": reason,
            "host": self.host,
            "pid": os.getpid(),
            "warmstart_version": __version__,
        }
        node = getattr(replica, "node", None)
        if node is not None:  # many machines: where it ran, and what its start fetched from a peer
            fields["node"] = node
            if event == "start" and replica.report.details:
                fields["details"] = dict(replica.report.details)
        try:
            await asyncio.to_thread(self._write, fields, path, engine, model)
        except OSError as exc:
            if self.metrics is not None:
                self.metrics.audit_failures.inc()
            where = exc.filename or self.directory
            problem = f"audit log: cannot write {where}: {exc.strerror or exc}"
            log.error("%s (%s record of %s lost)", problem, event, replica.id)
            if self.required and event == "start" and outcome == "ok":
                raise AuditError(
                    f"{problem}. The start of model '{model.name}' was refused because audit.required is true; "
                    f"free disk space or fix the permissions of {self.directory}, "
                    "or set audit.required = false") from None

    def _write(self, fields: dict[str, Any], path: Path | None, engine: Engine, model: ModelConfig) -> None:
        fields["sha256"] = fields["size"] = fields["sha256_cached"] = None
        if fields["event"] == "start" and self.manifests is not None:
            from warmstart.quant.gate import summary

            try:
                manifest = self.manifests.get(manifest_name(model.name, model.path))
                fields["accuracy"] = summary(manifest.accuracy if manifest is not None else None)
            except StoreError as exc:
                fields["accuracy"] = {"error": str(exc)}
        if path is not None:
            try:
                fields.update(weights_digest(self.digests, path).fields())
            except StoreError as exc:
                fields["digest_error"] = str(exc)
        try:
            fields["engine_version"] = engine.version(model)
        except Exception as exc:  # an engine that cannot say its version still gets its record
            fields["engine_version"] = f"unknown ({type(exc).__name__}: {exc})"
        self.writer.append(fields, self.clock.wall())

    async def record_change(self, event: str, fields: Mapping[str, Any]) -> None:
        """A change of what the server serves (a reload of its config), in the chain beside the starts it
        affects; a record that cannot be written is logged and counted, never refusing the change."""
        record = {"event": event, **fields, "host": self.host, "pid": os.getpid(), "warmstart_version": __version__}
        try:
            await asyncio.to_thread(self.writer.append, record, self.clock.wall())
        except OSError as exc:
            if self.metrics is not None:
                self.metrics.audit_failures.inc()
            log.error("audit log: cannot write %s: %s (%s record lost)", exc.filename or self.directory,
                      exc.strerror or exc, event)

    async def prime(self, paths: list[Path]) -> None:
        """Hash model files ahead of their first start (a cached digest makes that start's record cheap)."""
        for path in paths:
            with contextlib.suppress(StoreError, OSError):
                await asyncio.to_thread(weights_digest, self.digests, path)
