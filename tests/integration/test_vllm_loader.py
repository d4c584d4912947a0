"""vLLM's `--load-format warmstart` (warmstart's fast loader) with the real vLLM CPU build and a tiny Llama.

One warmstart server, three models on the same folder: `tiny-fast` loads with warmstart's loader,
`tiny-vllm` with vLLM's own safetensors loader. Both start vLLM from nothing (no runtime), so
vLLM *spawns* its engine core and worker: the loader must be registered in each of those fresh
interpreters through the plugin entry point, not inherited. `tiny-forked` loads with warmstart's
loader from a pre-initialized runtime, whose engine core and worker are forked and inherit the
registration. Three vLLM starts in all.
Run alone with `pytest -m vllm tests/integration/test_vllm_loader.py`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, config_text, free_port
from warmstart.bench._tiny_llama import build_in
from warmstart.engines.vllm import default_python

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(600)]
OPTIONS = {"enforce_eager": True, "max_model_len": 512, "kv_cache_space_gib": 1, "max_num_seqs": 4, "runtimes": 0}
RUNTIME_IMPORT_S = 240  # a runtime imports torch and vLLM at idle priority: 10 s quiet, far more when busy
PROMPT = "the capital of norway is"


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    python = default_python()
    assert ".venv-vllm" in python, f"vLLM's interpreter not found ({python}); run scripts/install.d/30-vllm.sh"
    work = Path(tempfile.mkdtemp(prefix="warmstart-vllm-loader-test-"))
    model = build_in(python, work / "tiny-llama")
    config = work / "warmstart.toml"
    config.write_text(config_text([
        {"name": "tiny-fast", "engine": "vllm", "path": str(model), "keep_alive": "30m",
         "options": {**OPTIONS, "load_format": "warmstart"}},
        {"name": "tiny-vllm", "engine": "vllm", "path": str(model), "keep_alive": "30m",
         "options": {**OPTIONS, "load_format": "safetensors"}},
        {"name": "tiny-forked", "engine": "vllm", "path": str(model), "keep_alive": "30m",
         "options": {**OPTIONS, "load_format": "warmstart", "runtimes": 1}},
    ]))
    try:
        server = Server(config_path=config, data_dir=work / "data", port=free_port()).start()
        yield server
        server.stop()
    finally:  # a short folder of its own (vLLM's socket paths must fit): not pytest's, so removed here
        shutil.rmtree(work, ignore_errors=True)


def complete(srv: Server, model: str, start: str = "cold") -> dict:
    status, headers, body = srv.post("/v1/completions", {
        "model": model, "prompt": PROMPT, "max_tokens": 24, "temperature": 0, "logprobs": 1,
        "ignore_eos": True}, timeout=300)
    assert status == 200, body
    assert headers["x-warmstart-start"] == start
    return body


def replica_log(srv: Server, model: str) -> str:
    [replica] = srv.model(model)["replicas"]
    [log] = [p for p in (srv.data_dir / "logs").glob("*.log") if f"pid={replica['pid']})" in p.read_text()]
    return log.read_text()


def test_a_replica_loaded_by_warmstart_s_loader_answers_exactly_as_one_loaded_by_vllm_s(srv):
    fast, plain = complete(srv, "tiny-fast"), complete(srv, "tiny-vllm")
    assert fast["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"] == 24
    assert fast["choices"][0]["text"] == plain["choices"][0]["text"]
    # same weights, same greedy path: the same tokens with the same log-probabilities
    assert fast["choices"][0]["logprobs"]["tokens"] == plain["choices"][0]["logprobs"]["tokens"]
    assert fast["choices"][0]["logprobs"]["token_logprobs"] == plain["choices"][0]["logprobs"]["token_logprobs"]


def test_the_log_shows_which_loader_read_the_weights_in_each_spawned_process(srv):
    fast, plain = replica_log(srv, "tiny-fast"), replica_log(srv, "tiny-vllm")
    # registered by the plugin entry point in the spawned engine core and worker, not inherited
    registered = [line for line in fast.splitlines() if "Registered model loader" in line and "`warmstart`" in line]
    assert any("EngineCore" in line for line in registered) and any("Worker" in line for line in registered)
    assert "Loading weights took" in fast and "(warmstart loader: 1 file," in fast
    assert "Loading weights took" in plain and "warmstart loader" not in plain
    # the load phase is read from our loader's line as from vLLM's own
    for name in ("tiny-fast", "tiny-vllm"):
        assert "load" in srv.model(name)["last_start"]["phases"]


def test_a_runtime_s_forked_processes_load_with_warmstart_s_loader_too(srv):
    srv.wait_for(lambda: (srv.model("tiny-forked")["runtime_pool"] or {}).get("ready") == 1,
                 timeout=RUNTIME_IMPORT_S, interval=0.5)
    forked, fast = complete(srv, "tiny-forked"), complete(srv, "tiny-fast", start="warm")
    assert forked["choices"][0]["text"] == fast["choices"][0]["text"]
    assert "handoff" in srv.model("tiny-forked")["last_start"]["phases"]
    log = replica_log(srv, "tiny-forked")
    assert "(warmstart loader: 1 file," in log
