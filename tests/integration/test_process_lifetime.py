"""Engine processes never outlive warmstart: on SIGTERM it stops them; on kill -9 they follow it."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support import chat, pid_alive, smollm2

pytestmark = pytest.mark.integration


def _engine_pid(srv):
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200
    return srv.model("smollm2-135m-instruct")["replicas"][0]["pid"]


def test_sigterm_stops_the_engines_before_warmstart_exits(start_server):
    srv = start_server([smollm2(keep_alive=-1)])
    pid = _engine_pid(srv)
    assert srv.stop() == 0
    assert not pid_alive(pid)
    assert "Traceback" not in srv.log()


def test_engines_die_with_a_killed_warmstart(start_server):
    srv = start_server([smollm2(keep_alive=-1)])
    pid = _engine_pid(srv)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    srv.wait_for(lambda: not pid_alive(pid), timeout=10)
