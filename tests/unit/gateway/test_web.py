"""The web pages and /api/dashboard through the real ASGI stack (no engine is started), and the
dashboard's view of a start on virtual time (replicas from the SimulatedEngine)."""

from __future__ import annotations

import asyncio
import gzip
import re

import pytest
from starlette.testclient import TestClient

from warmstart.clock import VirtualClock
from warmstart.config_loader import parse_config
from warmstart.engines.registry import create_engines
from warmstart.engines.simulated import SimulatedEngine
from warmstart.gateway.app import create_app
from warmstart.gateway.services import Services
from warmstart.gateway.web import STATIC, dashboard, load_assets, unload_in
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics
from warmstart.telemetry.window import HourWindow

API_KEY = "api-key-0123456789abcdef"


def client(tmp_path, models=None, **auth):
    raw = {"server": {"data_dir": str(tmp_path)}, "auth": auth}
    if models is not None:
        raw["models"] = models
    config = parse_config(raw, base_dir=tmp_path)
    metrics = Metrics()
    app = create_app(config, Pool(config, create_engines(tmp_path), VirtualClock(), metrics), metrics)
    return TestClient(app)


def many(n):
    return [{"name": f"model-{i:03d}", "engine": "llamacpp", "path": "/nonexistent/m.gguf"} for i in range(n)]


def test_pages_and_their_assets_are_served_by_warmstart_itself(tmp_path):
    with client(tmp_path) as c:
        for path in ("/", "/playground"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
            refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
            assert refs
            for ref in refs:
                assert ref.startswith("/"), ref  # same origin, nothing from a CDN
                if ref.startswith("/static/"):
                    assert c.get(ref).status_code == 200, ref
        missing = c.get("/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert c.get("/static/../pool/pool.py").status_code == 404


def test_no_asset_names_a_remote_location():
    for name, asset in load_assets().items():
        if name.startswith("vendor/swagger-ui/"):
            # Swagger UI (unchanged upstream) names URLs in its code and texts; that /docs fetches none of
            # them is checked in a real browser (tests/e2e/test_pages.py)
            continue
        text = asset.body.decode()
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text), name
    assert (STATIC / "dashboard.html").is_file()


def test_static_assets_revalidate_with_an_etag(tmp_path):
    with client(tmp_path) as c:
        r = c.get("/static/dashboard.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        again = c.get("/static/dashboard.js", headers={"if-none-match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_the_playground_names_its_model_for_the_warm_hint_and_never_reflects_other_input(tmp_path):
    with client(tmp_path, models=many(3)) as c:
        assert 'data-model="model-002"' in c.get("/playground?model=model-002").text
        page = c.get("/playground", params={"model": '"><script>alert(1)</script>'}).text
        assert "alert(1)" not in page and 'data-model="model-000"' in page  # unknown: the first model
        assert 'src="/warmstart.js"' in page


def test_api_dashboard_needs_the_key_when_keys_are_configured_but_the_pages_do_not(tmp_path):
    with client(tmp_path, api_keys=[API_KEY]) as c:
        assert c.get("/").status_code == 200
        assert c.get("/playground").status_code == 200
        assert c.get("/static/common.js").status_code == 200
        r = c.get("/api/dashboard")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert c.get("/api/dashboard", headers={"authorization": "Bearer wrong-key-000000"}).status_code == 401
        assert c.get("/api/dashboard", headers={"authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_api_dashboard_with_hundreds_of_models_is_compact_and_gzipped(tmp_path):
    with client(tmp_path, models=many(400)) as c:
        r = c.get("/api/dashboard", headers={"accept-encoding": "gzip"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert int(r.headers["content-length"]) < 8000  # 400 cold models compress to a few kB
        data = r.json()
        assert len(data["models"]) == 400 and data["states"] == {"cold": 400}
        assert data["totals"]["requests"] == 0 and data["totals"]["warm_ratio"] is None
        row = data["models"][0]
        assert row["name"] == "model-000" and row["state"] == "cold" and row["last_start"] is None
        assert row["hour"] is None and row["replicas"] == []
        plain = c.get("/api/dashboard", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert len(plain.content) > len(gzip.compress(plain.content))


def test_unload_in_is_the_last_idle_replica_to_expire():
    warm = {"state": "warm", "in_flight": 0, "expires_in_s": 10.0}
    assert unload_in([]) is None
    assert unload_in([warm, {**warm, "expires_in_s": 40.0}]) == 40.0
    assert unload_in([warm, {**warm, "in_flight": 1, "expires_in_s": None}]) is None  # busy
    assert unload_in([{**warm, "expires_in_s": None}]) is None  # keep-alive forever
    assert unload_in([{"state": "starting", "in_flight": 0, "expires_in_s": None}]) is None


async def test_the_dashboard_follows_a_start_phase_by_phase_on_virtual_time(tmp_path):
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"GGUF")
    clock = VirtualClock(epoch=1_700_000_000.0)
    raw = {"server": {"data_dir": str(tmp_path)}, "models": [
        {"name": "m", "engine": "llamacpp", "path": str(model_file), "keep_alive": "5m"},
        {"name": "other", "engine": "llamacpp", "path": str(model_file)}]}
    config = parse_config(raw, base_dir=tmp_path)
    metrics = Metrics()
    engine = SimulatedEngine(clock, (("spawn", 1.0), ("load", 4.0), ("warmup", 1.0)))
    pool = Pool(config, {"llamacpp": engine}, clock, metrics)
    services = Services(config=config, pool=pool, metrics=metrics, clock=clock, started_wall=clock.wall())
    window = HourWindow(metrics, started=clock.now())

    def view():
        views = pool.snapshot()
        data = dashboard(services, views, *window.figures(clock.now()))
        return data, {m["name"]: m for m in data["models"]}

    await pool.capabilities("m")
    pool.ensure_warm("m", "hint")
    await clock.advance(2.5)
    data, rows = view()
    m = rows["m"]
    assert data["states"] == {"starting": 1, "cold": 1}
    assert m["state"] == "starting" and m["phase"] == "load" and m["trigger"] == "hint"
    starting = m["replicas"][0]
    assert starting["phases"] == {"verify": 0.0, "spawn": 1.0} and starting["elapsed_s"] == 2.5
    await clock.advance(3.5)
    data, rows = view()
    m = rows["m"]
    assert m["state"] == "warm" and m["phase"] is None
    assert m["last_start"]["phases"] == {"verify": 0.0, "spawn": 1.0, "load": 4.0, "warmup": 1.0}
    assert m["last_start"]["trigger"] == "hint" and m["last_start"]["outcome"] == "ok"
    assert m["unload_in_s"] == pytest.approx(300.0)
    assert m["hour"]["starts"] == 1 and m["hour"]["loaded_s"] == pytest.approx(6.0)
    assert rows["other"]["hour"] is None and rows["other"]["state"] == "cold"
    lease = await pool.acquire("m")
    await clock.advance(0.05)
    metrics.requests.labels("m", lease.start, "200").inc()
    lease.release()
    await clock.advance(60)
    data, rows = view()
    assert rows["m"]["unload_in_s"] == pytest.approx(240.0)
    assert data["totals"]["warm"] == 1 and data["totals"]["warm_ratio"] == 1.0
    assert data["totals"]["loaded_s"] == pytest.approx(66.05, abs=0.1)  # rounded to 0.1 s
    await pool.shutdown()
    await asyncio.sleep(0)
