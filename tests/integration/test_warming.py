"""Warming in the live server with the real llama.cpp engine: a schedule and a hint start the model before
any request needs it; hints are limited; request arrivals are kept in SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import pytest

from tests.support import chat, smollm2

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def hint_count(srv, model: str, outcome: str) -> float:
    _, _, body = srv.request("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("warmstart_hints_total{") and f'model="{model}"' in line and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_schedule_warms_the_model_before_the_first_request(start_server):
    now = dt.datetime.now(dt.UTC)
    window = f"{now - dt.timedelta(minutes=2):%H:%M}-{now + dt.timedelta(minutes=30):%H:%M}"
    srv = start_server([smollm2()], sections={"warming": {"tick": "0.5s",
                                                          "schedule": [{"model": MODEL, "when": window}]}})
    model = srv.wait_for(lambda: (m := srv.model(MODEL))["state"] == "warm" and m, timeout=60)
    assert model["last_start"]["trigger"] == "schedule"
    assert model["warm_until_s"] > 25 * 60
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200 and headers["x-warmstart-start"] == "warm"


def test_a_hint_warms_the_model_and_hints_are_limited(start_server):
    srv = start_server([smollm2()], sections={"warming": {"tick": "0.5s"},
                                              "warming.hint": {"per_client_burst": 2, "per_client_per_minute": 1,
                                                               "cors_origins": ["https://app.example"]}})
    origin = {"origin": "https://app.example"}
    status, headers, body = srv.post("/v1/warm", {"model": MODEL}, headers=origin)
    assert status == 202, body
    assert body["outcome"] == "started" and body["state"] in ("starting", "warm")
    assert headers["access-control-allow-origin"] == "https://app.example"
    model = srv.wait_for(lambda: (m := srv.model(MODEL))["state"] == "warm" and m, timeout=60)
    assert model["last_start"]["trigger"] == "hint"
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200 and headers["x-warmstart-start"] == "warm"

    # the second hint of this client is its last for a minute; the GET form answers the same way
    status, _ = srv.get(f"/v1/warm?model={MODEL}")
    assert status == 202
    status, headers, body = srv.request("GET", f"/v1/warm?model={MODEL}")
    assert status == 429 and b"hint_rate_limited" in body and int(headers["retry-after"]) >= 1
    assert hint_count(srv, MODEL, "rate_limited") == 1

    # a page from elsewhere may not warm anything; a preflight from the allowed origin is answered
    status, _, body = srv.request("POST", "/v1/warm", {"model": MODEL}, headers={"origin": "https://evil.example"})
    assert status == 403
    status, headers, _ = srv.request("OPTIONS", "/v1/warm", headers={**origin, "access-control-request-method": "POST"})
    assert status == 204 and "POST" in headers["access-control-allow-methods"]
    status, headers, script = srv.request("GET", "/warmstart.js")
    assert status == 200 and headers["content-type"].startswith("application/javascript")
    assert b"sendBeacon" in script and b"focusin" in script


def test_over_the_hourly_budget_a_hint_starts_nothing(start_server):
    # a start is charged its cold start (30 s before one is measured) + 2 minutes warm: 200 s buy one
    srv = start_server([smollm2(), smollm2(name="other")],
                       sections={"warming": {"tick": "0.5s"},
                                 "warming.hint": {"budget_per_hour": "200s", "warm_for": "2m"}})
    status, _, body = srv.post("/v1/warm", {"model": MODEL})
    assert status == 202 and body["outcome"] == "started"
    status, headers, body = srv.request("POST", "/v1/warm", raw=b'{"model": "other"}',
                                        headers={"content-type": "text/plain;charset=UTF-8"})  # as sendBeacon sends
    assert status == 429 and b"hint_budget_exhausted" in body and int(headers["retry-after"]) > 60
    assert hint_count(srv, "other", "over_budget") == 1
    srv.wait_for(lambda: srv.model(MODEL)["state"] == "warm", timeout=60)
    assert srv.model("other")["state"] == "cold" and srv.model("other")["last_start"] is None


def test_request_arrivals_are_kept_in_sqlite(start_server, tmp_path):
    data = tmp_path / "data-keep"
    srv = start_server([smollm2()], sections={"warming": {"tick": "0.5s"}}, data_dir=data)
    # a model whose keep-alive the controller picks still stays loaded when a person warms it
    status, _, body = srv.post(f"/admin/models/{MODEL}/warm", {"wait": True})
    assert status == 200 and body["state"] == "warm"
    time.sleep(2)  # four ticks of the controller
    assert srv.model(MODEL)["state"] == "warm"
    for _ in range(2):
        assert srv.post("/v1/chat/completions", chat(max_tokens=2))[0] == 200
    srv.stop()
    with sqlite3.connect(data / "history.sqlite3") as db:
        rows = db.execute("SELECT model, t FROM arrivals ORDER BY t").fetchall()
    assert [m for m, _ in rows] == [MODEL, MODEL]
    assert rows[1][1] >= rows[0][1] > dt.datetime(2024, 1, 1).timestamp()
