"""The vLLM engine with the real vLLM CPU build (.venv-vllm) and a tiny Llama made here.

One warmstart server for the module, two models on the same vLLM interpreter: `tiny` takes
pre-initialized runtimes, `tiny-plain` starts vLLM's server from nothing. Three vLLM starts in all
(each 5-40 s on two cores), so the tests run in order and build on each other.
Run alone with `pytest -m vllm`.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, chat, config_text, free_port, pid_alive
from warmstart.bench._tiny_llama import build_in
from warmstart.engines.vllm import default_python

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(600)]
OPTIONS = {"enforce_eager": True, "max_model_len": 512, "kv_cache_space_gib": 1, "max_num_seqs": 8}
VLLM_PHASES = ("import", "handoff", "engine_init", "load", "compile", "kv_init", "warmup", "ready")
RUNTIME_IMPORT_S = 240  # a runtime imports torch and vLLM: 10 s on a quiet machine, far more on a busy one


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                found += kids
                todo += kids
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    python = default_python()
    assert Path(python).name.startswith("python") and ".venv-vllm" in python, (
        f"vLLM's interpreter not found ({python}); run ./install.sh --test (scripts/install.d/30-vllm.sh)")
    work = Path(tempfile.mkdtemp(prefix="warmstart-vllm-test-"))
    model = build_in(python, work / "tiny-llama")
    config = work / "warmstart.toml"
    config.write_text(config_text([
        {"name": "tiny", "engine": "vllm", "path": str(model), "keep_alive": "30m",
         "options": {**OPTIONS, "runtimes": 1}},
        {"name": "tiny-plain", "engine": "vllm", "path": str(model), "keep_alive": "30m",
         "options": {**OPTIONS, "runtimes": 0}},
    ]))
    try:
        server = Server(config_path=config, data_dir=work / "data", port=free_port()).start()
        yield server
        pool = server.model("tiny")["runtime_pool"]
        server.stop()
        # warmstart's shutdown stops the runtimes still waiting for a model
        assert not any(pid_alive(pid) for pid in pool["pids"])
    finally:  # a short folder of its own (vLLM's socket paths must fit): not pytest's, so removed here
        shutil.rmtree(work, ignore_errors=True)


def engine_phases(phases: dict) -> list[str]:
    """The phases the vLLM engine reports, in order (the pool adds its own, such as audit)."""
    return [p for p in phases if p in VLLM_PHASES]


def runtime_ready(srv: Server) -> dict | None:
    pool = srv.model("tiny")["runtime_pool"]
    return pool if pool and pool["ready"] == 1 else None


def test_capabilities_say_sleep_is_not_supported_on_cpu_and_a_runtime_is_kept(srv):
    model = srv.model("tiny")
    caps = srv.wait_for(lambda: srv.model("tiny")["capabilities"], timeout=30)  # found at start-up
    assert model["state"] == "cold"
    assert caps["sleep"] is False
    assert any("not supported on CPU" in note for note in caps["notes"])
    assert model["runtime_pool"]["size"] == 1
    assert srv.model("tiny-plain")["runtime_pool"] is None


def test_a_cold_start_takes_the_pre_initialized_runtime_and_the_pool_refills(srv):
    pool = srv.wait_for(lambda: runtime_ready(srv), timeout=RUNTIME_IMPORT_S, interval=0.5)
    [runtime_pid] = pool["pids"]
    assert pool["rss_bytes"] > 100 * 2**20  # torch and vLLM are in memory

    status, headers, raw = srv.request("POST", "/v1/chat/completions",
                                       chat(model="tiny", max_tokens=6, stream=True), timeout=300)
    assert status == 200, raw
    assert headers["x-warmstart-start"] == "cold"
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) >= 3

    model = srv.model("tiny")
    [replica] = model["replicas"]
    assert replica["pid"] == runtime_pid  # the runtime became the replica
    phases = model["last_start"]["phases"]
    assert engine_phases(phases) == ["handoff", "engine_init", "load", "kv_init", "warmup", "ready"]
    assert "import" not in phases  # paid before the request came

    refilled = srv.wait_for(lambda: runtime_ready(srv), timeout=RUNTIME_IMPORT_S, interval=0.5)
    assert refilled["pids"] != [runtime_pid] and refilled["handed_out"] == 1

    metrics = srv.request("GET", "/metrics")[2].decode()
    assert 'warmstart_cold_start_seconds_count{engine="vllm",model="tiny",phase="engine_init"} 1.0' in metrics \
        or 'warmstart_cold_start_seconds_count{model="tiny",engine="vllm",phase="engine_init"} 1.0' in metrics
    assert 'warmstart_runtime_handoffs_total{engine="vllm"} 1.0' in metrics
    rss = [line for line in metrics.splitlines() if line.startswith("warmstart_runtime_rss_bytes{")]
    assert rss and float(rss[0].split()[-1]) > 0


def test_a_crashed_vllm_is_replaced_on_the_next_request(srv):
    [replica] = srv.model("tiny")["replicas"]
    children = descendants(replica["pid"])
    assert children, "vLLM's engine core runs in its own process"
    os.kill(replica["pid"], signal.SIGKILL)
    srv.wait_for(lambda: srv.model("tiny")["state"] in ("failed", "cold"), timeout=30)
    srv.wait_for(lambda: not any(pid_alive(p) for p in children), timeout=30)  # the engine core went too

    status, headers, body = srv.post("/v1/completions", {"model": "tiny", "prompt": "the model answers",
                                                         "max_tokens": 4}, timeout=300)
    assert status == 200, body
    assert headers["x-warmstart-start"] == "cold"
    assert body["usage"]["completion_tokens"] == 4
    model = srv.model("tiny")
    assert model["replicas"][0]["pid"] != replica["pid"]
    assert "handoff" in model["last_start"]["phases"]


def test_a_plain_start_reports_every_phase_and_unload_frees_all_its_processes(srv):
    status, headers, body = srv.post("/v1/chat/completions", chat(model="tiny-plain", max_tokens=4), timeout=300)
    assert status == 200, body
    assert headers["x-warmstart-start"] == "cold"
    assert body["choices"][0]["message"]["role"] == "assistant"
    model = srv.model("tiny-plain")
    phases = model["last_start"]["phases"]
    assert engine_phases(phases) == ["import", "engine_init", "load", "kv_init", "warmup", "ready"]
    assert phases["import"] > 1.0  # the interpreter imported torch and vLLM during this start
    [replica] = model["replicas"]
    group = [replica["pid"], *descendants(replica["pid"])]
    assert len(group) >= 3  # API server, engine core, worker

    for name in ("tiny", "tiny-plain"):
        status, _, body = srv.post(f"/admin/models/{name}/unload", {})
        assert status == 200 and body["state"] == "cold"
    srv.wait_for(lambda: not any(pid_alive(p) for p in group), timeout=30)
    assert runtime_ready(srv) is not None  # the waiting runtime is not a replica: it stays
    # per-model caches in the data directory, reused by the next start of the same model
    assert (srv.data_dir / "vllm" / "cache" / "tiny-plain" / "vllm" / "modelinfos").is_dir()


def _reload_with_runtimes(srv: Server, runtimes: int) -> None:
    import tomllib

    models = tomllib.loads(srv.config_path.read_text())["models"]
    models[0]["options"]["runtimes"] = runtimes  # `tiny`
    srv.config_path.write_text(config_text(models))
    status, _, body = srv.post("/admin/reload", {})
    assert status == 200 and body["models"]["restarted"] == {"tiny": ["options"]}, body


def test_a_reload_stops_a_waiting_runtime_no_model_takes_and_starts_one_for_a_model_that_takes_them(srv):
    # last in the module: it leaves `tiny` restarted, with a runtime still importing (the fixture's stop ends it)
    pool = srv.wait_for(lambda: runtime_ready(srv), timeout=RUNTIME_IMPORT_S, interval=0.5)
    [waiting] = pool["pids"]
    _reload_with_runtimes(srv, 0)  # no model takes runtimes now: the waiting one stops
    srv.wait_for(lambda: not pid_alive(waiting), timeout=30)
    assert srv.model("tiny")["runtime_pool"] is None
    _reload_with_runtimes(srv, 1)  # and again: one starts, without a restart of the server
    fresh = srv.wait_for(lambda: (p := srv.model("tiny")["runtime_pool"]) and p["pids"] and p, timeout=30)
    assert fresh["pids"] != [waiting] and fresh["spawned"] == pool["spawned"] + 1
