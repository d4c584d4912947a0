"""The warm hint's origin check: a browser sends Origin even on a same-origin POST (sendBeacon does), so a
page warmstart serves itself (the playground) may send hints without being listed in cors_origins."""

from __future__ import annotations

from starlette.testclient import TestClient

from warmstart.clock import VirtualClock
from warmstart.config_loader import parse_config
from warmstart.engines.registry import create_engines
from warmstart.gateway.app import create_app
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics


def client(tmp_path):
    # hints may warm only "b": a hint for "a" that passes the origin check is refused as not allowed instead,
    # so no engine is ever started
    models = [{"name": n, "engine": "llamacpp", "path": "/nonexistent/m.gguf"} for n in ("a", "b")]
    config = parse_config({"server": {"data_dir": str(tmp_path)}, "models": models,
                           "warming": {"hint": {"models": ["b"]}}}, base_dir=tmp_path)
    metrics = Metrics()
    return TestClient(create_app(config, Pool(config, create_engines(tmp_path), VirtualClock(), metrics), metrics))


def test_a_same_origin_page_passes_the_origin_check_and_another_origin_does_not(tmp_path):
    with client(tmp_path) as c:
        same = c.post("/v1/warm", content=b'{"model": "a"}', headers={"origin": "http://testserver"})
        assert same.status_code == 403 and "may not warm the model" in same.json()["error"]["message"]
        other = c.post("/v1/warm", content=b'{"model": "a"}', headers={"origin": "https://elsewhere.example"})
        assert other.status_code == 403 and "are not accepted" in other.json()["error"]["message"]
        # a look-alike host on another port is another origin
        port = c.post("/v1/warm", content=b'{"model": "a"}', headers={"origin": "http://testserver:8080"})
        assert "are not accepted" in port.json()["error"]["message"]
