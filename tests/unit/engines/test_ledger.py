"""The ledger ends process groups a crashed warmstart left behind, and nothing else."""

import json
import os
import subprocess
import sys
import time

from tests.support import pid_alive
from warmstart.engines.ledger import ProcessLedger

SLEEPER = [sys.executable, "-c", "import subprocess, sys, time; "
           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)"]


def _group(pid):
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_sweep_ends_a_left_behind_group_with_its_children(tmp_path):
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(_group(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = _group(proc.pid)
        assert len(members) == 2
        ledger = ProcessLedger(tmp_path)
        ledger.record(proc.pid, SLEEPER, "m#1")
        entry = json.loads((tmp_path / f"{proc.pid}.json").read_text())
        entry["warmstart_pid"] = 999_999_999  # its warmstart is gone
        (tmp_path / f"{proc.pid}.json").write_text(json.dumps(entry))
        ended = ledger.sweep()
        assert [e["pid"] for e in ended] == [proc.pid]
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in members) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(pid_alive(p) for p in members)
        assert not list(tmp_path.glob("*.json"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)


def test_sweep_leaves_a_reused_pid_alone(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        (tmp_path / f"{proc.pid}.json").write_text(json.dumps(
            {"pid": proc.pid, "pgid": proc.pid, "cmdline": "some other program", "replica": "m#1",
             "warmstart_pid": 999_999_999}))
        assert ProcessLedger(tmp_path).sweep() == []
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_forget_on_exit(tmp_path):
    ledger = ProcessLedger(tmp_path)
    ledger.record(12345, ["x"], "m#1")
    ledger.forget(12345)
    assert not list(tmp_path.glob("*.json"))
