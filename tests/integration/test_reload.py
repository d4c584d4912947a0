"""Models and config changed while the server runs, with real `warmstart serve` processes and the real llama.cpp
engine: a model added to the store answers without a restart; SIGHUP adds a model and removes one whose
in-flight stream still finishes; `warmstart reload` refuses a broken config and the old one keeps serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support import SMOLLM2, chat, config_text, pid_alive, smollm2
from warmstart.store.sources import resolve_model_path

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [".venv/bin/warmstart"] if os.path.exists(".venv/bin/warmstart") else ["warmstart"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMSTART_")}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env)


def _names(srv) -> list[str]:
    return [m["id"] for m in srv.get("/v1/models")[1]["data"]]


def _weights(srv) -> Path:
    return resolve_model_path(SMOLLM2, srv.data_dir)


def test_a_model_added_to_the_store_answers_without_a_restart(start_server, tmp_path):
    data = tmp_path / "data"
    early = _cli("models", "add", str(resolve_model_path(SMOLLM2, data)), "--name", "early", "--data-dir", str(data))
    assert early.returncode == 0, early.stderr
    srv = start_server([smollm2(keep_alive="0")], data_dir=data)
    assert _names(srv) == [MODEL, "early"]  # added while no server ran: there at the start

    added = _cli("models", "add", str(_weights(srv)), "--name", "my-smol", "--data-dir", str(srv.data_dir))
    assert added.returncode == 0, added.stderr
    # the request itself finds it: no listing, no notice to the server came first
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=4, model="my-smol"))
    assert status == 200, body
    assert body["model"] == "my-smol" and body["choices"][0]["message"]["content"]
    assert "served as model 'my-smol'" in added.stdout and "no restart" in added.stdout
    assert _names(srv) == [MODEL, "early", "my-smol"]

    # the admin call adds a file on the server's disk; bad input is an OpenAI-style 4xx
    status, _, body = srv.post("/admin/models", {"path": str(_weights(srv)), "name": "smol-two"})
    assert status == 201 and body["id"] == "smol-two" and body["served"] is True, body
    assert body["engine"] == "llamacpp"  # told from the GGUF file
    for bad, code in (({"path": "relative.gguf"}, 400), ({"path": "/nonexistent/x.gguf"}, 400),
                      ({"path": str(_weights(srv)), "name": "smol-two"}, 409),
                      ({"path": str(_weights(srv)), "name": MODEL}, 409),
                      ({"path": str(_weights(srv)), "engine": "nope"}, 400)):
        status, _, body = srv.post("/admin/models", bad)
        assert status == code and body["error"]["message"], (bad, body)
    assert _names(srv) == [MODEL, "early", "my-smol", "smol-two"]

    removed = _cli("models", "rm", "my-smol", "--data-dir", str(srv.data_dir))
    assert removed.returncode == 0, removed.stderr
    assert _names(srv) == [MODEL, "early", "smol-two"]
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=4, model="my-smol"))
    assert status == 404 and body["error"]["code"] == "model_not_found"


def _stream(srv, model: str, max_tokens: int):
    body = {"model": model, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": max_tokens, "temperature": 0,
            "stream": True}
    req = urllib.request.Request(srv.url + "/v1/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    return urllib.request.urlopen(req, timeout=120)


def _events(resp) -> list[dict]:
    events = []
    for line in resp:
        line = line.strip()
        if line == b"data: [DONE]":
            return events
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
    raise AssertionError("the stream ended without [DONE]")


def test_sighup_adds_a_model_and_drains_a_removed_one_whose_stream_finishes(start_server):
    gone = smollm2(name="gone", keep_alive="10m", options={"n_ctx": 512})
    srv = start_server([smollm2(keep_alive="10m", options={"n_ctx": 512}), gone])
    resp = _stream(srv, "gone", 100)  # 160 ran 6 s past the reload (seen in 0.04 s)
    first = resp.readline()
    assert first.startswith(b"data: "), first
    replica = srv.model("gone")["replicas"][0]
    assert replica["in_flight"] == 1  # the stream is being generated as the config changes

    srv.config_path.write_text(config_text([smollm2(keep_alive="10m", options={"n_ctx": 512}),
                                            smollm2(name="fresh", options={"n_ctx": 512})]))
    os.kill(srv.proc.pid, signal.SIGHUP)
    srv.wait_for(lambda: _names(srv) == [MODEL, "fresh"], timeout=10)
    assert srv.proc.poll() is None  # SIGHUP reloads; it never ends the server
    status, _, body = srv.post("/v1/completions", {"model": "gone", "prompt": "hi", "max_tokens": 2})
    assert status == 404 and body["error"]["code"] == "model_not_found"

    events = _events(resp)  # the stream in flight on the removed model finishes, whole
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert sum(len(e["choices"][0]["text"]) for e in events if e["choices"]) > 20
    srv.wait_for(lambda: not pid_alive(replica["pid"]), timeout=20)  # then its replica unloads
    assert "draining: gone" in srv.log() and "added fresh" in srv.log()

    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=4, model="fresh"))
    assert status == 200, body


def test_reload_refuses_a_broken_config_and_applies_a_good_one(start_server):
    srv = start_server([smollm2(keep_alive="10m", options={"n_ctx": 512})])
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200
    old_pid = srv.model(MODEL)["replicas"][0]["pid"]
    url = ["--url", srv.url + "/v1", "--config", str(srv.config_path)]

    srv.config_path.write_text(config_text([smollm2(engine="nope")]))
    refused = _cli("reload", *url)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "models[0].engine" in refused.stderr and "keeps serving" in refused.stderr
    srv.config_path.write_text("[[models]\nname = ")
    status, _, body = srv.post("/admin/reload", {})
    assert status == 400 and body["error"]["code"] == "invalid_config" and "TOML" in body["error"]["message"]
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200 and srv.model(MODEL)["replicas"][0]["pid"] == old_pid  # the old config serves on

    # a new context size restarts the model on its next start; a new queue size needs a restart of the server
    srv.config_path.write_text(config_text([smollm2(keep_alive="10m", options={"n_ctx": 1024})],
                                           server={"queue_size": 7}))
    done = _cli("reload", *url)
    assert done.returncode == 0, done.stderr
    assert "options changed" in done.stdout and "needs a restart to apply: server.queue_size" in done.stdout
    srv.wait_for(lambda: not pid_alive(old_pid), timeout=20)
    status, headers, body = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200 and headers["x-warmstart-start"] == "cold"
    assert srv.model(MODEL)["replicas"][0]["pid"] != old_pid

    records = [json.loads(line) for f in sorted((srv.data_dir / "audit").glob("audit-*.jsonl"))
               for line in f.read_text().splitlines()]
    reloads = [r for r in records if r["event"] == "reload"]
    assert len(reloads) == 1 and reloads[0]["models"]["restarted"] == {MODEL: ["options"]}
    assert reloads[0]["needs_restart"] == ["server.queue_size"]
    verify = _cli("audit", "verify", "--data-dir", str(srv.data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    shown = _cli("audit", "show", "--data-dir", str(srv.data_dir)).stdout.splitlines()
    assert any(" reload " in line and "needs a restart to apply: server.queue_size" in line for line in shown)
