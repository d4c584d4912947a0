"""API and admin keys at the gateway's front door (the real ASGI stack, no engine is started)."""

import logging

import pytest
from starlette.testclient import TestClient

from warmstart.clock import SystemClock
from warmstart.config_loader import parse_config
from warmstart.engines.registry import create_engines
from warmstart.gateway.app import create_app
from warmstart.gateway.auth import KeyRing
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics

API_KEY = "api-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"


def client(tmp_path, **auth):
    config = parse_config({"server": {"data_dir": str(tmp_path)}, "auth": auth}, base_dir=tmp_path)
    metrics = Metrics()
    app = create_app(config, Pool(config, create_engines(tmp_path), SystemClock(), metrics), metrics)
    return TestClient(app)


def bearer(key):
    return {"authorization": f"Bearer {key}"}


def test_without_keys_on_loopback_everything_is_open(tmp_path):
    with client(tmp_path) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.post("/admin/models/nope/unload").status_code == 404  # reached the route


def test_api_keys_guard_the_api_and_metrics_but_not_health_or_the_hint(tmp_path):
    with client(tmp_path, api_keys=[API_KEY], admin_keys=[ADMIN_KEY]) as c:
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = c.get("/v1/models", headers=bearer("wrong-key-0123456789"))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.json()["error"]["type"] == "authentication_error"
        assert c.get("/v1/models", headers=bearer(API_KEY)).status_code == 200
        assert c.get("/v1/models", headers=bearer(ADMIN_KEY)).status_code == 200
        assert c.post("/v1/chat/completions", json={}).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer(API_KEY)).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/v1/warm").status_code != 401  # the hint is public: its own limits guard it


def test_admin_needs_the_admin_key(tmp_path):
    with client(tmp_path, api_keys=[API_KEY], admin_keys=[ADMIN_KEY]) as c:
        assert c.post("/admin/models/smollm2-135m-instruct/unload").status_code == 401
        r = c.post("/admin/models/smollm2-135m-instruct/unload", headers=bearer(API_KEY))
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert c.post("/admin/models/smollm2-135m-instruct/unload", headers=bearer(ADMIN_KEY)).status_code == 200


def test_admin_is_closed_when_api_keys_exist_but_no_admin_key(tmp_path):
    with client(tmp_path, api_keys=[API_KEY]) as c:
        r = c.post("/admin/models/smollm2-135m-instruct/unload", headers=bearer(API_KEY))
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


def test_keys_never_reach_the_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with client(tmp_path, api_keys=[API_KEY]) as c:
        c.get("/v1/models", headers=bearer(API_KEY))
        c.get("/v1/models", headers=bearer("guess-0123456789abcdef"))
    assert API_KEY not in caplog.text and "guess-0123456789abcdef" not in caplog.text


@pytest.mark.parametrize("presented,ok", [(API_KEY, True), (API_KEY[:-1], False), (API_KEY + "x", False), ("", False)])
def test_keyring(presented, ok):
    assert KeyRing((API_KEY, "other-key-0123456789")).holds(presented.encode()) is ok


def test_model_file_paths_are_shown_to_an_operator_not_to_an_api_key(tmp_path):
    with client(tmp_path) as c:  # no keys: whoever reaches it on loopback runs it
        [model] = [m for m in c.get("/v1/models").json()["data"] if m["id"] == "smollm2-135m-instruct"]
        assert "path" in model
    with client(tmp_path, api_keys=[API_KEY], admin_keys=[ADMIN_KEY]) as c:
        for key, shown in ((API_KEY, False), (ADMIN_KEY, True)):
            data = c.get("/v1/models", headers=bearer(key)).json()["data"]
            assert data and all(("path" in m) is shown for m in data), key
            one = c.get(f"/v1/models/{data[0]['id']}", headers=bearer(key)).json()
            assert ("path" in one) is shown


def test_a_reload_rotates_the_keys_and_needs_the_admin_key(tmp_path):
    from warmstart.errors import ConfigError

    new_admin, new_api = "admin-key-rotated-0123456789", "api-key-rotated-0123456789"
    loads = [parse_config({"server": {"data_dir": str(tmp_path)},
                           "auth": {"api_keys": [new_api], "admin_keys": [new_admin]}}, base_dir=tmp_path)]

    def load():
        if not loads:
            raise ConfigError("auth.api_keys", "<hidden>", "each key must be at least 16 printable characters")
        return loads.pop()

    config = parse_config({"server": {"data_dir": str(tmp_path)},
                           "auth": {"api_keys": [API_KEY], "admin_keys": [ADMIN_KEY]}}, base_dir=tmp_path)
    metrics = Metrics()
    app = create_app(config, Pool(config, create_engines(tmp_path), SystemClock(), metrics), metrics, load=load)
    with TestClient(app) as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers=bearer(API_KEY)).status_code == 403
        r = c.post("/admin/reload", headers=bearer(ADMIN_KEY))
        assert r.status_code == 200 and r.json()["settings_applied"] == ["auth"], r.json()
        assert c.get("/v1/models", headers=bearer(API_KEY)).status_code == 401  # the old key no longer opens it
        assert c.get("/v1/models", headers=bearer(new_api)).status_code == 200
        r = c.post("/admin/reload", headers=bearer(new_admin))  # a config that does not load: the keys stay
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
        assert "keeps serving" in r.json()["error"]["message"]
        assert c.get("/v1/models", headers=bearer(new_api)).status_code == 200
