"""The pre-initialized runtime pool's mechanics, with a stand-in runtime: a plain Python process that
speaks the runtime's protocol (report pipe, one order on stdin) in milliseconds instead of vLLM's seconds.
The real vLLM runtime is tested in test_vllm_engine.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.support import pid_alive
from warmstart.engines.runtime import RuntimePool, tree_rss

pytestmark = pytest.mark.integration

STAND_IN = r"""
import json, os, sys, time
fd = int(os.environ["WARMSTART_REPORT_FD"])
mode = os.environ.get("STAND_IN_MODE", "ok")
if mode == "crash":
    print("ImportError: no module named torch", flush=True)
    sys.exit(4)
os.write(fd, (json.dumps({"started": time.monotonic()}) + "\n").encode())
os.write(fd, (json.dumps({"imported": 0.01}) + "\n").encode())
order = json.loads(sys.stdin.readline() or "null")
if order is None:
    sys.exit(0)
os.write(fd, (json.dumps({"accepted": time.monotonic()}) + "\n").encode())
os.close(fd)
print("serving", order["argv"], flush=True)
time.sleep(60)
"""


def pool(tmp_path: Path, size: int = 1, mode: str = "ok") -> RuntimePool:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return RuntimePool("stand-in", [sys.executable, str(script)], {**os.environ, "STAND_IN_MODE": mode},
                       tmp_path / "logs", size)


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_a_taken_runtime_accepts_its_model_and_the_pool_refills(tmp_path):
    runtimes = pool(tmp_path)
    runtimes.refill()
    await until(lambda: runtimes.stats()["ready"] == 1)
    stats = runtimes.stats()
    assert stats["rss_bytes"] > 1 << 20 and len(stats["pids"]) == 1

    runtime = runtimes.take()
    assert runtime is not None and runtimes.take() is None
    await runtime.hand(json.dumps({"argv": ["--model", "m"]}).encode() + b"\n")
    await until(lambda: "serving ['--model', 'm']" in runtime.process.log_tail(1))

    runtimes.refill()
    await until(lambda: runtimes.stats()["ready"] == 1)
    assert runtimes.stats()["pids"] != [runtime.process.pid]
    assert runtimes.stats()["handed_out"] == 1 and runtimes.spawned == 2

    await runtimes.close()
    await runtime.process.stop(2)
    assert not pid_alive(runtime.process.pid)


async def test_an_idle_runtime_that_dies_is_replaced(tmp_path):
    runtimes = pool(tmp_path)
    runtimes.refill()
    await until(lambda: runtimes.stats()["ready"] == 1)
    [first] = runtimes.stats()["pids"]
    os.kill(first, 9)
    await until(lambda: runtimes.stats()["ready"] == 1 and runtimes.stats()["pids"] != [first])
    await runtimes.close()


async def test_runtimes_that_cannot_start_are_given_up_after_three_and_say_why(tmp_path):
    runtimes = pool(tmp_path, mode="crash")
    runtimes.refill()
    await until(lambda: runtimes.failures >= 3)
    await asyncio.sleep(0.3)
    assert runtimes.spawned == 3  # no endless respawning
    assert "exited with code 4" in runtimes.last_error and "no module named torch" in runtimes.last_error
    assert runtimes.take() is None  # starts fall back to spawning the engine from nothing
    await runtimes.close()


async def test_close_stops_the_waiting_runtimes(tmp_path):
    runtimes = pool(tmp_path, size=2)
    runtimes.refill()
    await until(lambda: runtimes.stats()["ready"] == 2)
    pids = runtimes.stats()["pids"]
    await runtimes.close()
    assert not any(pid_alive(p) for p in pids)
    assert tree_rss(pids[0]) == 0


async def test_runtimes_prepare_at_idle_priority_and_get_normal_priority_when_taken(tmp_path):
    runtimes = pool(tmp_path)
    runtimes.refill()
    await until(lambda: runtimes.stats()["ready"] == 1)
    [pid] = runtimes.stats()["pids"]
    # idle only where the priority can be given back (root, CAP_SYS_NICE or RLIMIT_NICE >= 20)
    assert os.sched_getscheduler(pid) == (os.SCHED_IDLE if runtimes.idle_priority else os.SCHED_OTHER)
    runtime = runtimes.take()
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    await runtimes.close()
    await runtime.process.stop(2)


async def test_a_reload_gives_a_new_vllm_python_its_runtimes_and_stops_those_no_model_uses(tmp_path):
    from dataclasses import replace
    from types import MappingProxyType

    from warmstart.config import ModelConfig
    from warmstart.engines.vllm import VllmEngine

    def stand_in(name: str) -> str:  # an executable speaking the runtime's protocol, in place of a vLLM Python
        path = tmp_path / name
        path.write_text(f"#!{sys.executable}\n" + STAND_IN)
        path.chmod(0o755)
        return str(path)

    a = ModelConfig("a", "vllm", str(tmp_path), options=MappingProxyType({"python": stand_in("py-a")}))
    b = ModelConfig("b", "vllm", str(tmp_path), options=MappingProxyType({"python": stand_in("py-b"), "runtimes": 2}))
    engine = VllmEngine(tmp_path / "data", (a,))
    await engine.open()
    try:
        pool_a = engine.pools[a.options["python"]]
        await until(lambda: pool_a.stats()["ready"] == 1)
        [pid_a] = pool_a.stats()["pids"]
        engine.models_changed((b,))  # a removed; b added, on another Python, with 2 runtimes
        pool_b = engine.pools[b.options["python"]]
        await until(lambda: pool_b.stats()["ready"] == 2)
        await until(lambda: not pid_alive(pid_a))
        assert pool_a.size == 0 and pool_a.stats()["pids"] == [] and engine.runtime_view(a) is None
        view = engine.runtime_view(b)
        assert view is not None and view["size"] == 2

        engine.models_changed((replace(b, options=MappingProxyType({**b.options, "runtimes": 1})),))
        pids = pool_b.stats()["pids"]
        await until(lambda: len(pool_b.stats()["pids"]) == 1)  # the surplus idle runtime stops
        await until(lambda: sum(pid_alive(p) for p in pids) == 1)
        assert pool_b.spawned == 2
    finally:
        await engine.close()
