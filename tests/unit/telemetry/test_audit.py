"""The audit log's guarantees on real files: the chain, tampering, torn writes, rotation, refusal."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from warmstart.clock import VirtualClock
from warmstart.config import ModelConfig
from warmstart.engines.base import StartReport
from warmstart.errors import AuditError
from warmstart.pool.replica import Replica
from warmstart.store.digest import DigestCache
from warmstart.telemetry import audit as audit_mod
from warmstart.telemetry.audit import GENESIS, AuditLog, AuditWriter, record_hash, segments
from warmstart.telemetry.audit_verify import verify
from warmstart.telemetry.metrics import Metrics

EPOCH = 1_795_000_000.0


def write(directory: Path, n: int, rotate_bytes: int = 1 << 20, **fields) -> list[dict]:
    writer = AuditWriter(directory, rotate_bytes)
    return [writer.append({"event": "start", "model": "m", "i": i, **fields}, EPOCH + i) for i in range(n)]


def log_lines(directory: Path) -> list[bytes]:
    return [line for seg in segments(directory) for line in seg.read_bytes().splitlines()]


def rewrite(directory: Path, lines: list[bytes]) -> None:
    [seg] = segments(directory)
    seg.write_bytes(b"".join(line + b"\n" for line in lines))


def test_records_form_one_chain_from_genesis(tmp_path):
    records = write(tmp_path, 4)
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    for r in records:
        assert r["hash"] == record_hash(r)
        assert r["time"].endswith("Z") and r["time"].startswith("2026-")
    assert [json.loads(line) for line in log_lines(tmp_path)] == records
    result = verify(tmp_path)
    assert result.ok and result.records == 4 and (result.first_seq, result.last_seq) == (1, 4)


def test_an_edited_record_is_named_by_line(tmp_path):
    write(tmp_path, 5)
    lines = log_lines(tmp_path)
    lines[2] = lines[2].replace(b'"model":"m"', b'"model":"x"')
    rewrite(tmp_path, lines)
    result = verify(tmp_path)
    assert not result.ok
    assert (result.problem.file, result.problem.line, result.problem.kind) == ("audit-000001.jsonl", 3, "edited")
    assert "seq 3" in result.problem.message and result.records == 2


def test_a_replaced_record_with_a_recomputed_hash_breaks_the_next_link(tmp_path):
    write(tmp_path, 5)
    lines = log_lines(tmp_path)
    forged = json.loads(lines[1])
    forged["model"] = "forged"
    forged["hash"] = record_hash(forged)
    lines[1] = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    rewrite(tmp_path, lines)
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (3, "edited")
    assert "does not chain" in result.problem.message


def test_a_deleted_record_is_named(tmp_path):
    write(tmp_path, 5)
    lines = log_lines(tmp_path)
    del lines[2]
    rewrite(tmp_path, lines)
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (3, "deleted")
    assert "seq 3 missing" in result.problem.message


def test_reordered_records_are_named(tmp_path):
    write(tmp_path, 5)
    lines = log_lines(tmp_path)
    lines[1], lines[3] = lines[3], lines[1]
    rewrite(tmp_path, lines)
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (2, "reordered")
    assert "seq 4 comes before seq 2" in result.problem.message


def test_a_line_that_is_not_a_record_is_named(tmp_path):
    write(tmp_path, 3)
    lines = log_lines(tmp_path)
    lines.insert(1, b"hello")
    rewrite(tmp_path, lines)
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (2, "invalid")


def test_records_cut_from_the_end_are_detected_by_the_head(tmp_path):
    write(tmp_path, 5)
    lines = log_lines(tmp_path)
    rewrite(tmp_path, lines[:3])
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (3, "truncated")
    assert "head.json says record seq 5" in result.problem.message
    # the next writer keeps the gap visible rather than reusing seq 4 and 5
    write(tmp_path, 1)
    again = verify(tmp_path)
    assert (again.problem.line, again.problem.kind) == (4, "deleted")


def test_a_torn_final_line_is_reported_then_acknowledged_and_the_chain_continues(tmp_path):
    records = write(tmp_path, 3)
    [seg] = segments(tmp_path)
    whole = seg.read_bytes()
    partial = b'{"engine":"llamacpp","event":"start","hash":"ab'
    seg.write_bytes(whole + partial)  # what a kill -9 in the middle of write() leaves
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (4, "truncated")
    assert "the 3 records before it are intact" in result.problem.message

    [next_record] = write(tmp_path, 1)
    lines = log_lines(tmp_path)
    assert lines[3] == partial  # nothing is deleted from the log
    recovery = json.loads(lines[4])
    assert recovery["event"] == "recovery" and recovery["prev"] == records[-1]["hash"]
    assert recovery["torn"] == [{"file": seg.name, "line": 4, "bytes": len(partial),
                                 "sha256": hashlib.sha256(partial).hexdigest()}]
    assert next_record["prev"] == recovery["hash"] and next_record["seq"] == 5
    result = verify(tmp_path)
    assert result.ok and result.records == 5
    assert any("line 4" in note and "interrupted" in note for note in result.notes)


def test_tampering_with_an_acknowledged_torn_line_is_detected(tmp_path):
    write(tmp_path, 2)
    [seg] = segments(tmp_path)
    seg.write_bytes(seg.read_bytes() + b'{"torn')
    write(tmp_path, 1)
    lines = log_lines(tmp_path)
    lines[2] = b'{"tampered'
    rewrite(tmp_path, lines)
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (3, "invalid")


def test_a_whole_record_missing_only_its_newline_is_kept(tmp_path):
    write(tmp_path, 2)
    [seg] = segments(tmp_path)
    seg.write_bytes(seg.read_bytes()[:-1])
    assert verify(tmp_path).ok
    [third] = write(tmp_path, 1)
    assert third["seq"] == 3
    assert verify(tmp_path).ok and len(log_lines(tmp_path)) == 3


def test_rotation_keeps_one_chain_across_files(tmp_path):
    records = write(tmp_path, 12, rotate_bytes=1024, error="x" * 200)
    files = segments(tmp_path)
    assert len(files) >= 3
    assert all(f.stat().st_size <= 1024 for f in files)
    first_of_second = json.loads(files[1].read_bytes().splitlines()[0])
    last_of_first = json.loads(files[0].read_bytes().splitlines()[-1])
    assert first_of_second["prev"] == last_of_first["hash"]
    result = verify(tmp_path)
    assert result.ok and result.records == 12 and len(result.files) == len(files)
    assert [r["seq"] for r in records] == list(range(1, 13))


def test_a_deleted_rotated_file_is_named(tmp_path):
    write(tmp_path, 12, rotate_bytes=1024, error="x" * 200)
    files = segments(tmp_path)
    first_missing = json.loads(files[1].read_bytes().splitlines()[0])["seq"]
    files[1].unlink()
    result = verify(tmp_path)
    assert (result.problem.file, result.problem.line, result.problem.kind) == (files[2].name, 1, "deleted")
    assert f"seq {first_missing}" in result.problem.message


def test_writers_in_two_processes_keep_one_chain(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from warmstart.telemetry.audit import AuditWriter\n"
        "w = AuditWriter(Path(sys.argv[1]), 4096)\n"
        "for i in range(40):\n"
        "    w.append({'event': 'start', 'model': sys.argv[2], 'i': i}, 1795000000.0 + i)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name]) for name in ("a", "b")]
    for p in procs:
        assert p.wait(60) == 0
    result = verify(tmp_path)
    assert result.ok and result.records == 80
    models = [json.loads(line)["model"] for line in log_lines(tmp_path)]
    assert models.count("a") == models.count("b") == 40


# ---- the pool's sink: digests, fsync before return, refusal when it cannot write ---------------------

class LlamaLike:
    """Stands in for the engine only to answer version(); the sink reads nothing else from it."""

    kind = "llamacpp"

    def version(self) -> str:
        return "llama-cpp-python 0.3.36"


def model_and_replica(tmp_path: Path) -> tuple[ModelConfig, Replica, Path]:
    weights = tmp_path / "weights.gguf"
    weights.write_bytes(os.urandom(3 << 20))
    model = ModelConfig(name="m", engine="llamacpp", path=str(weights), options={"n_ctx": 2048})
    report = StartReport()
    report.done("spawn", 0.05)
    report.done("load", 0.5)
    replica = Replica(id="m#1", model="m", trigger="request", capacity=1, keep_alive=300, created_at=0.0,
                      created_wall=EPOCH, report=report)
    return model, replica, weights


async def test_a_start_record_has_everything_a_compliance_officer_asks_for(tmp_path):
    model, replica, weights = model_and_replica(tmp_path)
    digests = DigestCache(tmp_path / "digests.json")
    sink = AuditLog(tmp_path / "audit", clock=VirtualClock(epoch=EPOCH + 1), digests=digests)
    await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok",
                      seconds=0.6)
    await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok",
                      seconds=0.6)
    first, second = (json.loads(line) for line in log_lines(tmp_path / "audit"))
    assert first["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert first["size"] == 3 << 20
    assert first["sha256_cached"] is False and second["sha256_cached"] is True and digests.hashed == 1
    assert first["time"] == "2026-11-18T11:06:41.000000Z"
    assert first["replica_started"] == "2026-11-18T11:06:40.000000Z"
    assert first["phases"] == [{"phase": "spawn", "seconds": 0.05}, {"phase": "load", "seconds": 0.5}]
    assert {k: first[k] for k in ("event", "model", "replica", "trigger", "engine", "engine_version", "options",
                                  "path", "seconds", "outcome", "error")} == {
        "event": "start", "model": "m", "replica": "m#1", "trigger": "request", "engine": "llamacpp",
        "engine_version": "llama-cpp-python 0.3.36", "options": {"n_ctx": 2048}, "path": str(weights),
        "seconds": 0.6, "outcome": "ok", "error": None}
    assert first["host"] == os.uname().nodename and first["pid"] == os.getpid()


async def test_record_returns_only_after_its_bytes_are_fsynced(tmp_path, monkeypatch):
    model, replica, weights = model_and_replica(tmp_path)
    synced: list[bytes] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith(".jsonl"):
            synced.append(Path(path).read_bytes())

    monkeypatch.setattr(audit_mod.os, "fsync", spy)
    sink = AuditLog(tmp_path / "audit", clock=VirtualClock(epoch=EPOCH))
    await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok")
    assert synced and synced[-1] == segments(tmp_path / "audit")[0].read_bytes()
    assert json.loads(synced[-1])["event"] == "start"


def dev_full_log(directory: Path) -> None:
    """An audit directory whose current file is /dev/full: every write fails with ENOSPC (disk full)."""
    directory.mkdir()
    (directory / "audit-000001.jsonl").symlink_to("/dev/full")


def not_a_directory(directory: Path) -> None:
    directory.write_text("a file where the audit directory should be")


@pytest.mark.parametrize("breakage, reason", [(dev_full_log, "No space left on device"),
                                              (not_a_directory, "Not a directory")])
async def test_a_record_that_cannot_be_written_refuses_the_start_and_is_counted(tmp_path, breakage, reason):
    model, replica, weights = model_and_replica(tmp_path)
    breakage(tmp_path / "audit")
    metrics = Metrics()
    sink = AuditLog(tmp_path / "audit", clock=VirtualClock(epoch=EPOCH), metrics=metrics)
    with pytest.raises(AuditError) as caught:
        await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok")
    message = str(caught.value)
    assert message.startswith("audit log: cannot write ") and reason in message
    assert "start of model 'm' was refused because audit.required is true" in message
    assert metrics.registry.get_sample_value("warmstart_audit_write_failures_total") == 1
    # an unload cannot be refused: it is counted and logged
    await sink.record("unload", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok")
    assert metrics.registry.get_sample_value("warmstart_audit_write_failures_total") == 2
    if breakage is dev_full_log:  # verify names the file it cannot read, rather than reading /dev/full forever
        problem = verify(tmp_path / "audit").problem
        assert (problem.file, problem.kind) == ("audit-000001.jsonl", "invalid")


async def test_audit_not_required_lets_the_start_go_on_and_counts_the_loss(tmp_path):
    model, replica, weights = model_and_replica(tmp_path)
    dev_full_log(tmp_path / "audit")
    metrics = Metrics()
    sink = AuditLog(tmp_path / "audit", clock=VirtualClock(epoch=EPOCH), metrics=metrics, required=False)
    await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok")
    assert metrics.registry.get_sample_value("warmstart_audit_write_failures_total") == 1


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_record(tmp_path):
    write(tmp_path, 2)
    [seg] = segments(tmp_path)
    before = seg.read_bytes()
    # RLIMIT_FSIZE makes the kernel write part of the record, then fail the rest (EFBIG), as a full disk does
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from warmstart.telemetry.audit import AuditWriter\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "limit = int(sys.argv[2])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
        "try:\n"
        "    AuditWriter(Path(sys.argv[1])).append({'event': 'start', 'error': 'x' * 4000}, 1795000000.0)\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(len(before) + 1000)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.strip() == "27", out.stderr  # EFBIG, after a partial write
    assert seg.read_bytes() == before
    write(tmp_path, 1)
    assert verify(tmp_path).ok
