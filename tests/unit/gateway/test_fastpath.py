"""The fast path and the FastAPI routes it stands in front of answer bad input identically."""

import pytest
from starlette.testclient import TestClient

from warmstart.clock import SystemClock
from warmstart.config_loader import load_config
from warmstart.engines.registry import create_engines
from warmstart.gateway.app import create_app
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics

BODIES = [
    b'{"model": "smollm2-135m-instruct", "messages": [',
    b'{"messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}',
    b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "n": 300}',
    b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "hi"}]}',
    b'"just a string"',
    b"x" * 70_000,
]


def _app(data_dir):
    config = load_config(None, env={}, flags={"server.data_dir": str(data_dir), "server.max_body_bytes": 65536})
    metrics = Metrics()
    return create_app(config, Pool(config, create_engines(data_dir), SystemClock(), metrics), metrics)


@pytest.fixture
def apps(tmp_path):
    # two apps: each TestClient runs its app's lifespan on its own event loop
    with TestClient(_app(tmp_path / "a")) as fast, TestClient(_app(tmp_path / "b").app) as framework:
        yield fast, framework


@pytest.mark.parametrize("body", BODIES)
def test_same_answer_through_both_doors(apps, body):
    fast, framework = apps
    a = fast.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    b = framework.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert a.status_code == b.status_code and a.status_code in (400, 404, 413)
    assert a.json()["error"]["code"] == b.json()["error"]["code"]
    assert a.json()["error"]["param"] == b.json()["error"]["param"]
