"""The command engine with a real OpenAI-compatible server: llama.cpp's own server (tests/llama_server.py)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support import ROOT, SMOLLM2, chat, pid_alive

pytestmark = pytest.mark.integration
NAME = "smollm2-server"
ENGINE_PHASES = ("spawn", "import", "load", "kv_init", "compile", "warmup", "ready")


def llama_cpp_server(**options: object) -> dict:
    return {"name": NAME, "engine": "command", "path": SMOLLM2, "keep_alive": "10m", "options": {
        "command": ["{python}", str(ROOT / "tests" / "llama_server.py"), "--model", "{model_path}", "--host",
                    "{host}", "--port", "{port}", "--ctx", "2048", "--alias", "{model_name}"],
        "health_path": "/v1/models", "ready_pattern": "listening on http", **options}}


def test_a_command_server_starts_cold_answers_streams_and_stops(start_server):
    srv = start_server([llama_cpp_server()])
    assert srv.model(NAME)["state"] == "cold"

    status, headers, body = srv.post("/v1/chat/completions", chat(model=NAME, max_tokens=12))
    assert status == 200, body
    assert headers["x-warmstart-start"] == "cold"
    assert "Oslo" in body["choices"][0]["message"]["content"]

    model = srv.model(NAME)
    phases = model["last_start"]["phases"]
    # the engine's phases (the pool adds its own, such as audit): load until the ready line, ready until /v1/models
    assert [p for p in phases if p in ENGINE_PHASES] == ["spawn", "load", "ready"]
    assert phases["load"] > 0
    [replica] = model["replicas"]
    assert pid_alive(replica["pid"])
    assert "sleep" in " ".join(model["capabilities"]["notes"])

    status, headers, raw = srv.request("POST", "/v1/chat/completions", chat(model=NAME, max_tokens=6, stream=True))
    assert status == 200 and headers["x-warmstart-start"] == "warm"
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["object"] == "chat.completion.chunk"

    status, _, body = srv.post(f"/admin/models/{NAME}/unload", {})
    assert status == 200 and body["stopped"] == 1
    srv.wait_for(lambda: not pid_alive(replica["pid"]), timeout=15)


def test_a_command_that_exits_fails_the_start_with_its_own_error(start_server):
    srv = start_server([{"name": "broken", "engine": "command", "path": SMOLLM2, "options": {
        "command": [sys.executable, "-c", "import sys; print('ValueError: no such flag --port', flush=True); "
                    "sys.exit(3)", "{port}"]}}])
    status, _, body = srv.post("/v1/chat/completions", chat(model="broken"))
    assert status == 503, body
    message = body["error"]["message"]
    assert "exited with code 3" in message and "no such flag" in message
    assert srv.model("broken")["state"] in ("failed", "cold")


def test_warm_from_the_cli_shows_the_start_moving_when_it_takes_more_than_a_second(start_server):
    """issue 17 item 9: a CLI operation longer than a second shows progress (here a server that takes 2 s
    before it even starts)."""
    import subprocess
    import sys

    server = llama_cpp_server()
    command = " ".join(server["options"]["command"])
    slow = {**server["options"], "command": ["sh", "-c", f"sleep 2 && exec {command}"]}
    srv = start_server([{**server, "options": slow}])
    warm = subprocess.run([sys.executable, "-m", "warmstart", "warm", NAME, "--url", srv.url], capture_output=True,
                          text=True, timeout=120)
    assert warm.returncode == 0, warm.stderr
    assert f"{NAME}: starting, " in warm.stderr  # said while it waited
    assert warm.stdout.startswith(f"{NAME}: warm in ")
    quick = subprocess.run([sys.executable, "-m", "warmstart", "warm", NAME, "--url", srv.url], capture_output=True,
                           text=True, timeout=60)
    assert quick.returncode == 0 and quick.stderr == ""  # already warm: nothing to show
