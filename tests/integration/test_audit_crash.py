"""kill -9 of a process that is writing audit records, at whatever point the kill lands."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from warmstart.telemetry.audit import AuditWriter
from warmstart.telemetry.audit_format import parse_record, read_head, segments
from warmstart.telemetry.audit_verify import verify

pytestmark = pytest.mark.integration

# Large records (4 MiB each, ~0.16 s a record here: building, write(), fsync()) spread the kills over every step
# of a write; the guarantee below must hold wherever one lands. (write() itself takes ~2 ms of that, so a real
# kill rarely tears a line: tests/unit/telemetry/test_audit.py and test_audit_server.py make the torn line.)
WRITER = """
import sys
from pathlib import Path
from warmstart.telemetry.audit import AuditWriter
writer = AuditWriter(Path(sys.argv[1]), rotate_bytes=32 << 20)
i = 0
while True:
    writer.append({"event": "start", "model": "m", "i": i, "error": "x" * (4 << 20)}, 1795000000.0 + i)
    i += 1
"""


@pytest.mark.parametrize("after_records, delay", [(1, 0.0), (2, 0.04), (2, 0.09), (3, 0.13)])
def test_kill_9_while_writing_leaves_a_log_that_verify_reports_and_the_next_writer_continues(tmp_path,
                                                                                            after_records, delay):
    directory = tmp_path / "audit"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)])
    try:
        deadline = time.monotonic() + 60
        while (read_head(directory) or {}).get("seq", 0) < after_records:
            assert proc.poll() is None and time.monotonic() < deadline, "the writer stopped writing"
            time.sleep(0.002)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    written = read_head(directory)["seq"]

    result = verify(directory)
    if result.ok:  # the kill fell between records
        assert result.last_seq >= written
    else:  # the kill fell inside a write: exactly the torn last line is reported, every record before it stands
        assert result.problem.kind == "truncated" and "a write was interrupted" in result.problem.message
        assert result.last_seq >= written

    record = AuditWriter(directory).append({"event": "start", "model": "m", "after": "kill"}, 1795000100.0)
    after = verify(directory)
    assert after.ok, after.problem
    assert after.last_seq == record["seq"]
    # the recovery record closes the torn segment; the next record may rotate into a new one (a kill late in a
    # 4 MiB write leaves the segment near the 16 MiB the new writer rotates at), so read the chain across segments
    lines = [raw for path in segments(directory) for raw in path.read_bytes().splitlines()]
    tail = [r for r in map(parse_record, lines) if r is not None]
    assert tail[-1]["after"] == "kill"
    if not result.ok:
        assert tail[-2]["event"] == "recovery" and any("interrupted" in n for n in after.notes)
