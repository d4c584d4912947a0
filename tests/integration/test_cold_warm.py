"""Cold start, then warm, with the real llama.cpp engine and the real SmolLM2 model."""

from __future__ import annotations

import pytest

from tests.support import chat, pid_alive, smollm2

pytestmark = pytest.mark.integration


def test_first_request_starts_the_model_cold_then_it_answers_warm(start_server):
    srv = start_server([smollm2()])
    assert srv.model("smollm2-135m-instruct")["state"] == "cold"

    status, headers, body = srv.post("/v1/chat/completions", chat())
    assert status == 200, body
    assert headers["x-warmstart-start"] == "cold"
    assert float(headers["x-warmstart-wait-ms"]) > 0
    assert "Oslo" in body["choices"][0]["message"]["content"]
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] > 0

    status, headers, body = srv.post("/v1/chat/completions", chat())
    assert status == 200
    assert headers["x-warmstart-start"] == "warm"
    assert headers["x-warmstart-replica"] == "smollm2-135m-instruct#1"

    model = srv.model("smollm2-135m-instruct")
    assert model["state"] == "warm"
    [replica] = model["replicas"]
    assert pid_alive(replica["pid"])
    phases = model["last_start"]["phases"]
    for phase in ("spawn", "import", "load", "warmup", "ready"):
        assert phase in phases and phases[phase] >= 0
    assert model["last_start"]["trigger"] == "request"
    assert model["last_start"]["total_s"] >= sum(phases.values()) * 0.99
