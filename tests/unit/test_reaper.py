"""Stopping pytest stops what its tests started in sessions of their own (tests/reaper.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.reaper import descendants
from tests.support import pid_alive, wait_until

REPO = Path(__file__).resolve().parents[2]
CHILD_TEST = '''
import subprocess, sys, time
from pathlib import Path

def test_starts_a_server_and_waits():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    Path(sys.argv[-1]).parent.joinpath("child.pid").write_text(str(child.pid))
    time.sleep(120)
'''


def test_descendants_are_found_through_grandchildren():
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                              "print(p.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        assert [child.pid, grandchild] == [p for p in descendants(os.getpid()) if p in (child.pid, grandchild)]
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.kill()
        child.wait()
        child.stdout.close()


def test_a_process_a_test_started_in_its_own_session_ends_when_pytest_is_stopped(tmp_path):
    test_file = tmp_path / "test_child.py"
    test_file.write_text(CHILD_TEST)
    pytest_run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.reaper", "-c", os.devnull, "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = tmp_path / "child.pid"
    child = None
    try:  # the inner test writes its child's pid once it runs
        child = int(wait_until(lambda: pid_file.exists() and pid_file.read_text()))
        assert pid_alive(child)
        pytest_run.send_signal(signal.SIGTERM)
        assert pytest_run.wait(30) == -signal.SIGTERM
        wait_until(lambda: not pid_alive(child))
    finally:
        pytest_run.kill()
        if child is not None and pid_alive(child):
            os.kill(child, signal.SIGKILL)
