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
from warmstart.telemetry.audit import AuditLog, AuditWriter
from warmstart.telemetry.audit_format import GENESIS, record_hash, segments
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


# ---- malformed lines: named by file and line, never a traceback; the chain covers the bytes written ------

def duplicate_sha256(line: bytes) -> bytes:
    """A second `sha256` key before the real one: a reader taking the first value sees a forged digest."""
    return line.replace(b'"sha256":', b'"sha256":"' + b"cd" * 32 + b'","sha256":', 1)


def reordered(line: bytes) -> bytes:
    record = json.loads(line)
    return json.dumps(dict(reversed(list(record.items()))), separators=(",", ":")).encode()


MALFORMED = {
    "nan": (lambda line: line.replace(b'"model":"m"', b'"model":NaN'), "edited", "NaN"),
    "1e999": (lambda line: line.replace(b'"i":1', b'"i":1e999'), "edited", "1e999"),
    "10000 deep": (lambda line: b"[" * 10_000 + b"]" * 10_000, "invalid", "nested too deeply"),
    "10000 deep in a record": (lambda line: line[:-1] + b',"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "invalid",
                               "nested too deeply"),
    "duplicate sha256": (duplicate_sha256, "edited", 'the key "sha256" appears twice'),
    "not an object": (lambda line: b'["start", 2]', "invalid", "a JSON array, not an object"),
    "a string": (lambda line: b'"start"', "invalid", "a JSON string, not an object"),
    "reordered keys": (reordered, "edited", "not in the writer's canonical form"),
    "spaces": (lambda line: line.replace(b",", b", "), "edited", "not in the writer's canonical form"),
    "escaped otherwise": (lambda line: line.replace(b'"model":"m"', b'"model":"\\u006d"'), "edited",
                          "canonical form"),
    "not UTF-8": (lambda line: b"\xff\xfe{}", "invalid", "not UTF-8"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_line_is_named_by_file_and_line_never_a_traceback(tmp_path, case):
    write(tmp_path, 3, sha256="ab" * 32)
    lines = log_lines(tmp_path)
    damage, kind, says = MALFORMED[case]
    lines[1] = damage(lines[1])
    rewrite(tmp_path, lines)
    result = verify(tmp_path)
    assert not result.ok and result.records == 1
    assert (result.problem.file, result.problem.line, result.problem.kind) == ("audit-000001.jsonl", 2, kind)
    assert says in result.problem.message
    assert result.problem.where() == "audit-000001.jsonl line 2"


def test_the_writer_writes_only_lines_the_verifier_reads_back_as_written(tmp_path):
    # values JSON cannot keep as they are (tuples, integer keys, non-ASCII, lone surrogates) are written
    # as they read back, so each line is the canonical form of its record and the chain verifies
    records = write(tmp_path, 2, options={10: (1, 2), 9: "é\ud800\x7f"}, seconds=1e-7, big=2**70)
    assert records[0]["options"] == {"10": [1, 2], "9": "é\ud800\x7f"}
    assert [json.loads(line) for line in log_lines(tmp_path)] == records
    assert verify(tmp_path).ok
    with pytest.raises(ValueError):  # NaN is refused before anything is written
        write(tmp_path, 1, seconds=float("nan"))
    assert verify(tmp_path).ok and len(log_lines(tmp_path)) == 2


# written by the writer before the verifier checked bytes (commit 0dd2a11): a start, a torn line, its
# recovery record and an unload; logs written then must still verify
OLD_LOG = (
    b'{"engine":"llamacpp","error":null,"event":"start","hash":"cebacceec4b86333f28136a3e9f7261f41948157f9'
    b'70fd0f7e4531f32dadf94c","model":"llama-8b","options":{"n_ctx":2048,"repack":false},"outcome":"ok","p'
    b'ath":"/models/llama \\u00e9.gguf","phases":[{"phase":"spawn","seconds":0.05}],"prev":"000000000000000'
    b'0000000000000000000000000000000000000000000000000","reason":null,"replica":"llama-8b#1","seconds":1.'
    b'25,"seq":1,"sha256":"abababababababababababababababababababababababababababababababab","sha256_cache'
    b'd":true,"size":3873665536,"time":"2026-11-18T11:06:40.000000Z","trigger":"request","v":1}\n'
    b'{"event":"unl\n'
    b'{"event":"recovery","hash":"648da4cfb8da3f45001817e2894d58daacabc5d4b632fcca05a52b22d4c12db1","prev"'
    b':"cebacceec4b86333f28136a3e9f7261f41948157f970fd0f7e4531f32dadf94c","seq":2,"time":"2026-11-18T11:11'
    b':40.000000Z","torn":[{"bytes":13,"file":"audit-000001.jsonl","line":2,"sha256":"9aac07f425ff617e7f59'
    b'2805b2115cfc4483600694aba65d5d72fec60f6da1a0"}],"v":1}\n'
    b'{"event":"unload","hash":"c2c9e2208c9cdf7bdbaf79239f70a70b97af2f775b4c98df0486868cff1885b3","model":'
    b'"llama-8b","outcome":"ok","phases":[],"prev":"648da4cfb8da3f45001817e2894d58daacabc5d4b632fcca05a52b'
    b'22d4c12db1","reason":"keep-alive","seconds":300.0,"seq":3,"time":"2026-11-18T11:11:40.000000Z","v":1'
    b'}\n'
)


def test_a_log_written_by_the_earlier_writer_still_verifies_and_is_continued(tmp_path):
    (tmp_path / "audit-000001.jsonl").write_bytes(OLD_LOG)
    (tmp_path / "head.json").write_text(json.dumps({
        "seq": 3, "hash": "c2c9e2208c9cdf7bdbaf79239f70a70b97af2f775b4c98df0486868cff1885b3",
        "file": "audit-000001.jsonl"}))
    result = verify(tmp_path)
    assert result.ok and result.records == 3, result.problem
    [fourth] = write(tmp_path, 1)
    assert fourth["seq"] == 4 and verify(tmp_path).ok


def test_a_recovery_record_naming_a_line_that_is_no_number_is_no_crash(tmp_path):
    AuditWriter(tmp_path).append({"event": "recovery", "torn": [{"file": "x", "line": [1], "sha256": {}}]}, EPOCH)
    write(tmp_path, 1)
    assert verify(tmp_path).ok


def test_the_writer_does_not_continue_the_chain_from_a_line_with_a_duplicate_key(tmp_path):
    write(tmp_path, 2, sha256="ab" * 32)
    lines = log_lines(tmp_path)
    lines[1] = duplicate_sha256(lines[1])
    rewrite(tmp_path, lines)
    write(tmp_path, 1)  # not acknowledged as debris: head.json says record 2 was written
    result = verify(tmp_path)
    assert (result.problem.line, result.problem.kind) == (2, "edited")


# ---- the pool's sink: digests, fsync before return, refusal when it cannot write ---------------------

class LlamaLike:
    """Stands in for the engine only to answer version(); the sink reads nothing else from it."""

    kind = "llamacpp"

    def version(self, model: object = None) -> str:
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


async def test_a_byte_flip_with_the_mtime_put_back_is_hashed_again_for_the_record(tmp_path):
    model, replica, weights = model_and_replica(tmp_path)
    digests = DigestCache(tmp_path / "digests.json")
    sink = AuditLog(tmp_path / "audit", clock=VirtualClock(epoch=EPOCH + 1), digests=digests)
    await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok")
    await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok")
    st = weights.stat()
    with weights.open("r+b") as f:  # one byte flipped in place: same size, same inode
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    await sink.record("start", model=model, path=weights, replica=replica, engine=LlamaLike(), outcome="ok")
    first, second, third = (json.loads(line) for line in log_lines(tmp_path / "audit"))
    assert (first["sha256_basis"], second["sha256_basis"], third["sha256_basis"]) == ("hashed", "stat", "hashed")
    assert second["sha256_hashed_at"] == first["sha256_hashed_at"]  # trusted by stat since that reading
    assert first["sha256"] == second["sha256"] != third["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert third["sha256_cached"] is False and digests.hashed == 2


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
