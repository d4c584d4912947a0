"""One exception tree for warmstart; every boundary (HTTP, CLI) translates from it.

    WarmstartError
    ├── ConfigError            bad configuration: names the field and the value
    ├── RequestError           the client's fault: an HTTP 4xx in OpenAI's error format
    │   ├── InvalidRequest         400
    │   ├── AuthenticationError    401
    │   ├── PermissionDenied       403
    │   ├── ModelNotFound          404
    │   ├── Conflict               409 (e.g. a RAM-tier hold that does not fit)
    │   ├── PayloadTooLarge        413
    │   └── RateLimited            429 (+ Retry-After)
    ├── Unavailable            the server cannot serve now: 503 (+ Retry-After)
    │   ├── QueueFull              the model's holding queue is full
    │   ├── DeadlineExceeded       a held request waited past its deadline
    │   └── ModelStartFailed       the engine could not start the model
    ├── EngineError            an engine process misbehaved (crash, protocol error)
    ├── StoreError             model files: missing, unreadable, digest mismatch
    │   └── UnverifiedModel        failed its accuracy gate, or quantized and never evaluated
    ├── AuditError             an audit record could not be written
    └── ImageError             an image could not be built or run (podman, buildah, mmdebstrap)
"""

from __future__ import annotations


class WarmstartError(Exception):
    """Base of every error warmstart raises on purpose."""


class ConfigError(WarmstartError):
    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"config: {field} = {value!r}: {reason}")


class RequestError(WarmstartError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(RequestError):
    pass


class AuthenticationError(RequestError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(RequestError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class ModelNotFound(RequestError):
    status = 404
    code = "model_not_found"


class Conflict(RequestError):
    status = 409
    code = "conflict"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class RateLimited(RequestError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Unavailable(WarmstartError):
    status = 503
    type = "server_error"
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = 1.0) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class QueueFull(Unavailable):
    code = "queue_full"


class DeadlineExceeded(Unavailable):
    code = "deadline_exceeded"


class ModelStartFailed(Unavailable):
    code = "model_start_failed"


class EngineError(WarmstartError):
    """An engine process crashed, refused, or spoke something unexpected."""


class StoreError(WarmstartError):
    pass


class IntegrityError(StoreError):
    pass


class UnverifiedModel(StoreError):
    """The model's manifest says it failed its accuracy gate (or was quantized and never evaluated)."""


class AuditError(WarmstartError):
    pass


class ImageError(WarmstartError):
    """`warmstart image`: a tool is missing or failed; the message says which and how to fix it."""


def openai_error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
