"""The llama.cpp engine on a llama-server binary (option `server`) and on a router pre-started with warmstart
(option `router`): the same answers, phases, slots and audit records as with the xllamacpp wheel. The binary is
.cache/llama-server/bin/llama-server, built by scripts/install.d/25-llama-server.sh from Debian sid's packages
(or $WARMSTART_LLAMA_SERVER)."""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_audit_server import metric, records, smol_file
from tests.integration.test_llamacpp_server import engine_slots, open_stream
from tests.support import chat, pid_alive, smollm2

pytestmark = pytest.mark.integration
SMOL = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("WARMSTART_LLAMA_SERVER") or str(ROOT / ".cache" / "llama-server" / "bin" / "llama-server")
PHASES = ["verify", "spawn", "load", "kv_init", "warmup", "ready", "audit"]


def _runs(binary: str) -> str | None:
    import subprocess

    why = Path(binary).parent.parent / "UNAVAILABLE"  # written by the install script when it could not build one
    if why.is_file():
        return why.read_text().strip()
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"{binary}: {exc.strerror or exc}"
    return None if done.returncode == 0 else f"{binary} --version: exit {done.returncode}"


_PROBLEM = _runs(BINARY)
if _PROBLEM is not None:
    pytestmark = [pytest.mark.integration, pytest.mark.skip(
        reason=f"no llama-server binary ({_PROBLEM}); run scripts/install.d/25-llama-server.sh")]


def binary_model(**options):
    return smollm2(options={"n_ctx": 2048, "server": BINARY, **options})


def audit_starts(srv) -> list[dict]:
    return [r for r in records(srv.data_dir / "audit") if r["event"] == "start"]


def test_the_binary_answers_with_every_phase_from_its_own_log_in_metrics_and_audit(start_server):
    srv = start_server([binary_model()])
    # what llama-server would silently ignore is refused by name, as with the wheel, before anything starts
    status, _, body = srv.post("/v1/completions", {"model": SMOL, "prompt": "Once upon", "best_of": 2})
    assert status == 400 and body["error"]["param"] == "best_of" and srv.model(SMOL)["state"] == "cold"
    status, headers, body = srv.post("/v1/chat/completions", chat(max_tokens=12, temperature=0))
    assert status == 200, body
    assert "Oslo" in body["choices"][0]["message"]["content"] and headers["x-warmstart-start"] == "cold"
    phases = srv.model(SMOL)["last_start"]["phases"]
    assert list(phases) == PHASES
    assert all(phases[p] > 0 for p in ("spawn", "load", "kv_init", "warmup", "ready"))
    assert sum(phases.values()) == pytest.approx(srv.model(SMOL)["last_start"]["total_s"], rel=0.02)
    [replica] = srv.model(SMOL)["replicas"]
    with open(f"/proc/{replica['pid']}/exe", "rb"):
        assert os.path.realpath(f"/proc/{replica['pid']}/exe") == os.path.realpath(BINARY)
    for phase in ("spawn", "load", "kv_init", "warmup", "ready"):
        assert metric(srv, "warmstart_cold_start_seconds_count", model=SMOL, engine="llamacpp", phase=phase) == 1
    [record] = audit_starts(srv)
    assert record["outcome"] == "ok" and record["engine_version"].startswith("llama-server 0.7.0")
    assert [p["phase"] for p in record["phases"]] == PHASES[:-1]  # recorded before its own phase


def test_the_binarys_slots_serve_max_concurrency_requests_at_once(start_server):
    srv = start_server([binary_model(n_ctx=512)])
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200
    slots = engine_slots(srv)
    assert len(slots) == 4 and all(s["n_ctx"] == 512 for s in slots)
    socks = [open_stream(srv, max_tokens=400) for _ in range(4)]
    try:
        for sock in socks:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert srv.wait_for(lambda: sum(s["is_processing"] for s in engine_slots(srv)) == 4, timeout=30)
        model = srv.model(SMOL)
        assert model["replicas"][0]["in_flight"] == 4 and model["queue_depth"] == 0
    finally:
        for sock in socks:
            sock.close()
    # the engine's own count (its /metrics) tells the gateway when the abandoned streams are gone
    srv.wait_for(lambda: srv.model(SMOL)["replicas"][0]["in_flight"] == 0, timeout=30)


def test_a_start_in_the_pre_started_router_and_an_unload_through_it(start_server):
    # no n_ctx: the router's flags take the context the GGUF was trained with, read through its package: path
    srv = start_server([smollm2(options={"server": BINARY, "router": True}, max_concurrency=1)])
    router = srv.wait_for(lambda: (srv.model(SMOL).get("runtime_pool") or {}).get("ready") == 1, timeout=30)
    assert router
    pool = srv.model(SMOL)["runtime_pool"]
    [router_pid] = pool["pids"]
    status, headers, body = srv.post("/v1/chat/completions", chat(max_tokens=12, temperature=0))
    assert status == 200, body
    assert "Oslo" in body["choices"][0]["message"]["content"] and headers["x-warmstart-start"] == "cold"
    model = srv.model(SMOL)
    assert list(model["last_start"]["phases"]) == PHASES
    [replica] = model["replicas"]
    # the replica is the router's instance: its child process, not one warmstart spawned
    with open(f"/proc/{replica['pid']}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[2]) == router_pid
    assert model["runtime_pool"]["handed_out"] == 1 and model["runtime_pool"]["ready"] == 0
    assert [s["n_ctx"] for s in engine_slots(srv)] == [8192]

    status, _, _ = srv.post(f"/admin/models/{SMOL}/unload", {})
    assert status in (200, 202)
    assert srv.wait_for(lambda: not pid_alive(replica["pid"]), timeout=30)
    assert pid_alive(router_pid)  # the router stays, waiting for the next start
    assert srv.wait_for(lambda: srv.model(SMOL)["runtime_pool"]["ready"] == 1, timeout=30)
    with urllib.request.urlopen(f"{srv.url}/v1/models", timeout=10) as resp:
        assert resp.status == 200

    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=12, temperature=0))
    assert status == 200 and "Oslo" in body["choices"][0]["message"]["content"]
    assert srv.model(SMOL)["runtime_pool"]["handed_out"] == 2
    starts = audit_starts(srv)
    assert [s["outcome"] for s in starts] == ["ok", "ok"]


async def test_a_model_that_fails_in_the_router_names_why_and_leaves_the_router_waiting(tmp_path):
    from types import MappingProxyType

    from warmstart.config import ModelConfig
    from warmstart.engines.base import StartReport
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.errors import EngineError

    # a whole GGUF whose architecture llama.cpp does not know: it fails in load
    data = bytearray(smol_file().read_bytes())
    at = data.index(b"general.architecture") + len("general.architecture") + 4 + 8
    assert data[at:at + 5] == b"llama"
    data[at:at + 5] = b"llamb"
    gguf = tmp_path / "unknown-arch.gguf"
    gguf.write_bytes(data)
    cfg = ModelConfig(name="unknown-arch", engine="llamacpp", path=str(gguf),
                      options=MappingProxyType({"n_ctx": 512, "server": BINARY, "router": True}))
    engine = LlamaCppEngine(tmp_path, models=(cfg,))
    await engine.open()
    try:
        router = engine.routers["unknown-arch"]
        await asyncio.wait_for(router.listening.wait(), 30)
        report = StartReport()
        with pytest.raises(EngineError, match=r"exited with code 1 during load: .*unknown model architecture: 'llamb'"):
            await engine.start(cfg, gguf, report, "unknown-arch#1")
        assert [p for p, _ in report.phases] == ["verify", "spawn"]  # and not started again without the router
        assert router.process is not None and router.process.returncode is None
        assert router.stats()["ready"] == 1 and router.handed_out == 1
    finally:
        await engine.close()
    assert router.process.returncode is not None


async def test_a_start_cancelled_in_the_router_leaves_no_instance_and_the_next_loads_from_the_ram_tier(tmp_path):
    from types import MappingProxyType

    from warmstart.config import ModelConfig
    from warmstart.engines.base import StartReport
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.engines.procfs import children
    from warmstart.store.tiers import RamTier

    cfg = ModelConfig(name="smol", engine="llamacpp", path=str(smol_file()),
                      options=MappingProxyType({"n_ctx": 512, "server": BINARY, "router": True}))
    engine = LlamaCppEngine(tmp_path, models=(cfg,))
    await engine.open()
    try:
        router = engine.routers["smol"]
        await asyncio.wait_for(router.listening.wait(), 30)
        report = StartReport()
        start = asyncio.ensure_future(engine.start(cfg, smol_file(), report, "smol#1"))
        for _ in range(6000):  # until the instance runs (its first log line was read), at most 30 s
            if report.current == "load" or start.done():
                break
            await asyncio.sleep(0.005)
        assert report.current == "load" and not start.done()
        start.cancel()  # as the pool's start timeout does
        with pytest.raises(asyncio.CancelledError):
            await start
        assert not router.busy
        for _ in range(200):
            if not children(router.process.pid):
                break
            await asyncio.sleep(0.05)
        assert children(router.process.pid) == []
        # the next start, from the RAM tier's copy: the router's link points there, the instance maps it
        tier = RamTier(method="tmpfs", tmpfs_dir=Path("/dev/shm") / f"ws-test-router-{os.getpid()}")
        tier.hold("smol", [smol_file()])
        copy = tier.path_for("smol", smol_file())
        proc = await engine.start(cfg, copy, StartReport(), "smol#2")
        assert proc.pid in children(router.process.pid) and router.handed_out == 2
        assert str(copy) in Path(f"/proc/{proc.pid}/maps").read_text()
        await proc.stop(10)
        assert proc.returncode == 0 and not router.busy  # unloaded by the router: it logged status 0
    finally:
        await engine.close()
        shutil.rmtree(Path("/dev/shm") / f"ws-test-router-{os.getpid()}", ignore_errors=True)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])  # its ppid


def _reload(srv, models: list[dict]) -> dict:
    from tests.support import config_text

    srv.config_path.write_text(config_text(models))
    status, _, body = srv.post("/admin/reload", {})
    assert status == 200, body
    return body


def _router_ready(srv) -> dict:
    return srv.wait_for(lambda: (p := srv.model(SMOL).get("runtime_pool") or {}).get("ready") == 1 and p, timeout=30)


def test_a_reload_that_adds_router_starts_one_and_a_changed_model_gets_a_fresh_one(start_server):
    srv = start_server([smollm2(keep_alive="10m", options={"server": BINARY, "n_ctx": 512}, max_concurrency=1)])
    assert srv.model(SMOL).get("runtime_pool") is None
    # `router = true` added: its router starts at the reload, and the next start is a POST /models/load there
    _reload(srv, [smollm2(keep_alive="10m", options={"server": BINARY, "n_ctx": 512, "router": True},
                          max_concurrency=1)])
    [router_pid] = _router_ready(srv)["pids"]
    status, headers, body = srv.post("/v1/chat/completions", chat(max_tokens=12, temperature=0))
    assert status == 200 and headers["x-warmstart-start"] == "cold", body
    [replica] = srv.model(SMOL)["replicas"]
    assert _parent(replica["pid"]) == router_pid  # the router's instance, not a process warmstart spawned
    assert srv.model(SMOL)["runtime_pool"]["handed_out"] == 1
    assert [s["n_ctx"] for s in engine_slots(srv)] == [512]

    # new router settings (n_ctx): a fresh router for them; the old one closes once its draining replica is gone
    _reload(srv, [smollm2(keep_alive="10m", options={"server": BINARY, "n_ctx": 1024, "router": True},
                          max_concurrency=1)])
    assert srv.wait_for(lambda: not pid_alive(replica["pid"]) and not pid_alive(router_pid), timeout=30)
    [fresh_pid] = _router_ready(srv)["pids"]
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=12, temperature=0))
    assert status == 200 and "Oslo" in body["choices"][0]["message"]["content"], body
    [replica] = srv.model(SMOL)["replicas"]
    assert fresh_pid != router_pid and _parent(replica["pid"]) == fresh_pid
    assert [s["n_ctx"] for s in engine_slots(srv)] == [1024]
    # each router's log of its own: the two never read each other's instance lines
    logs = srv.data_dir / "logs"
    assert "spawning server instance with name=" in (logs / f"router-{SMOL}.1.log").read_text()
    assert (logs / f"router-{SMOL}.log").read_text().count("spawning server instance with name=") == 1


def test_a_reload_that_drops_router_closes_it_once_its_replica_has_drained(start_server):
    srv = start_server([smollm2(keep_alive="10m", options={"server": BINARY, "n_ctx": 512, "router": True},
                                max_concurrency=1)])
    [router_pid] = _router_ready(srv)["pids"]
    resp = open_stream(srv, max_tokens=200)  # in flight in the router's instance as the config changes
    try:
        assert resp.recv(4096).startswith(b"HTTP/1.1 200")
        replica = srv.wait_for(lambda: (r := srv.model(SMOL)["replicas"]) and r[0]["in_flight"] == 1 and r[0])
        assert _parent(replica["pid"]) == router_pid
        _reload(srv, [smollm2(keep_alive="10m", options={"server": BINARY, "n_ctx": 512}, max_concurrency=1)])
        assert srv.model(SMOL).get("runtime_pool") is None  # handed out no more
        assert pid_alive(router_pid)  # its instance still serves the stream: the router waits for it
    finally:
        resp.close()
    assert srv.wait_for(lambda: not pid_alive(replica["pid"]) and not pid_alive(router_pid), timeout=30)
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200, body
    [replica] = srv.model(SMOL)["replicas"]
    assert _parent(replica["pid"]) == srv.proc.pid  # a plain llama-server: no router left for the model
