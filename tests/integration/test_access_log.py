"""What `warmstart serve` says while it works: a line per request (text or JSON), a line per start and unload.
Real server, real engine (SmolLM2)."""

from __future__ import annotations

import json

from tests.support import chat, smollm2

MODEL = "smollm2-135m-instruct"


def test_each_request_start_and_unload_is_logged_as_text(start_server):
    srv = start_server([smollm2()])
    assert srv.post("/v1/chat/completions", chat(max_tokens=3))[0] == 200  # cold
    assert srv.post("/v1/chat/completions", {**chat(max_tokens=3), "stream": True,
                                             "stream_options": {"include_usage": True}})[0] == 200
    assert srv.post("/v1/chat/completions", {**chat(max_tokens=3), "temperature": -1})[0] == 400
    assert srv.post("/v1/chat/completions", chat(model="no-such-model"))[0] == 404
    assert srv.post(f"/admin/models/{MODEL}/unload", {})[0] == 200
    # access lines are written in batches (AccessLog.FLUSH_S): wait for all four, not only for the unload's line
    lines = srv.wait_for(lambda: [line for line in srv.log().splitlines() if "/v1/chat/completions" in line]
                         if "unloaded" in srv.log() and srv.log().count("/v1/chat/completions") >= 4 else None,
                         timeout=10)
    cold, stream, refused, unknown = lines
    assert f"{MODEL} status=200 cold" in cold and "tokens=" in cold and f"replica={MODEL}#1" in cold
    assert float(cold.split("wait_ms=")[1].split()[0]) > 0  # it was held while the model started
    assert " warm wait_ms=0.0" in stream and " stream " in stream and "tokens=" in stream
    assert "status=400" in refused and "replica=-" in refused
    assert "no-such-model status=404" in unknown
    log = srv.log()
    assert f"replica {MODEL}#1 warm: started in" in log and "(request)" in log
    assert f"replica {MODEL}#1 unloaded (manual)" in log


def test_json_access_log_is_one_object_per_line_and_off_logs_nothing(start_server):
    srv = start_server([smollm2()], server={"access_log": "json"})
    for _ in range(2):
        assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    entries = srv.wait_for(lambda: [json.loads(line) for line in srv.log().splitlines()
                                    if line.startswith("{")] or None, timeout=10)
    assert len(entries) == 2
    first, second = entries
    assert (first["model"], first["status"], first["start"], second["start"]) == (MODEL, 200, "cold", "warm")
    assert first["completion_tokens"] == 2 and first["prompt_tokens"] > 0
    assert first["wait_ms"] > 0 == second["wait_ms"] and first["duration_ms"] >= first["wait_ms"]
    assert first["path"] == "/v1/chat/completions" and first["stream"] is False

    quiet = start_server([smollm2()], server={"access_log": "off"})
    assert quiet.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    assert "/v1/chat/completions" not in quiet.log()
