"""The API schema as the gateway really answers: errors in OpenAI's format with their real statuses.

FastAPI documents a 422 with its own validation body for every route that takes input; warmstart
answers 400 with `{"error": {...}}` instead (and 401, 403, 404, 409, 413, 429, 503 where they apply).
Clients generated from the schema, and the schema-driven fuzz test, rely on this being true.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        },
    }},
}
_WHY = {
    "400": "Invalid request (OpenAI error format)",
    "401": "Missing or wrong API key",
    "403": "The key may not use this endpoint",
    "404": "Unknown model",
    "409": "The RAM tier cannot hold the model: the message names the limit that refused it",
    "413": "Request body over server.max_body_bytes",
    "429": "Rate limited (Retry-After)",
    "503": "The model cannot serve now: queue full, deadline passed, start failed (Retry-After if a retry helps)",
}
_WHY_HINT = {"403": "Hints are off, or not for this model or origin",
             "429": "Rate limit or hourly budget (Retry-After)"}


# the warm hint (warmstart/gateway/hint.py) reads its model from the query or a body of any content type
# (as navigator.sendBeacon sends it), which FastAPI cannot see: described here
_HINT_MODEL = {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "The model to warm (or in a JSON body: {\"model\": ...})."}
_HINT_OK = {"description": "Accepted: the model's state and what the hint did", "content": {"application/json": {
    "schema": {"type": "object", "properties": {"model": {"type": "string"}, "state": {"type": "string"},
                                                "outcome": {"type": "string"}, "warm_for_s": {"type": "number"}}}}}}


def _statuses(path: str, method: str) -> tuple[str, ...]:
    if path == "/v1/warm":
        return ("400", "403", "404", "413", "429") if method == "post" else ("400", "403", "404", "429")
    if path.endswith("/ram"):
        return ("400", "401", "403", "404", "409", "413", "503")
    if path.startswith("/admin/"):
        return ("400", "401", "403", "404", "413", "503")
    if path.startswith("/v1/") and method == "post":
        return ("400", "401", "404", "413", "429", "503")
    if path.startswith("/v1/"):
        return ("401", "404") if "{" in path else ("401",)
    return ()


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            components["ErrorResponse"] = ERROR_SCHEMA
            ref = {"$ref": "#/components/schemas/ErrorResponse"}
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    responses = operation.setdefault("responses", {})
                    responses.pop("422", None)
                    if path == "/v1/warm":
                        responses.pop("200", None)
                        responses["202"] = _HINT_OK
                        operation["parameters"] = [_HINT_MODEL]
                        if method == "post":
                            operation["requestBody"] = {"required": False, "content": {"application/json": {
                                "schema": {"type": "object", "properties": {"model": {"type": "string"}}}}}}
                    for status in _statuses(path, method):
                        why = _WHY_HINT.get(status, _WHY[status]) if path == "/v1/warm" else _WHY[status]
                        responses[status] = {"description": why,
                                             "content": {"application/json": {"schema": ref}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
