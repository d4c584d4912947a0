"""The published schema says what the gateway really answers."""

from starlette.testclient import TestClient

from warmstart.clock import SystemClock
from warmstart.config_loader import load_config
from warmstart.engines.registry import create_engines
from warmstart.gateway.app import create_app
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics


def test_errors_are_documented_as_openai_errors_with_their_real_statuses(tmp_path):
    config = load_config(None, env={}, flags={"server.data_dir": str(tmp_path)})
    metrics = Metrics()
    app = create_app(config, Pool(config, create_engines(tmp_path), SystemClock(), metrics), metrics)
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
        invalid = client.post("/v1/chat/completions", json={"model": "smollm2-135m-instruct"})
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert set(error["properties"]["error"]["required"]) == set(invalid.json()["error"]) and invalid.status_code == 400
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in chat and {"200", "400", "401", "404", "413", "503"} <= set(chat)
    assert chat["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "403" in schema["paths"]["/admin/models/{model}/warm"]["post"]["responses"]
    assert set(schema["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    hint = schema["paths"]["/v1/warm"]
    responses = hint["get"]["responses"]
    assert {"202", "400", "403", "404", "429"} <= set(responses) and "200" not in responses
    assert hint["get"]["parameters"][0]["name"] == "model" and "requestBody" in hint["post"]
