"""API keys: Bearer tokens for the /v1 API and /metrics, admin keys for /admin, compared in constant time.

Open without a key: health checks, the warm hint (a page's beacon cannot carry a secret; the hint
has its own allowlist, rate limit and budget), the web pages and their static assets, the API docs.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from warmstart.config import AuthConfig
from warmstart.errors import openai_error_body
from warmstart.gateway.limits import send_json_error

PUBLIC = ("/healthz", "/readyz", "/v1/warm", "/warmstart.js")
API = ("/v1/", "/metrics", "/api/")
ADMIN = ("/admin/",)
OLLAMA = "/api/"  # Ollama's API (gateway/ollama.py): its refusals in Ollama's shape, {"error": "..."}
OWN_API = ("/api/dashboard",)


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class KeyRing:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = [_digest(k) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def holds(self, presented: bytes) -> bool:
        # equal-length digests and no early exit: the time taken says nothing about the keys
        probe = _digest(presented)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(probe, digest)
        return found


class Auth:
    def __init__(self, app: ASGIApp, config: AuthConfig, required: bool, loopback: bool) -> None:
        self.app = app
        self.loopback = loopback
        self.update(config, required)

    def update(self, config: AuthConfig, required: bool) -> None:
        """Take the keys in force (at start, and again on a reload of the config)."""
        self.api = KeyRing(config.api_keys)
        self.admin = KeyRing(config.admin_keys)
        # keys configured on loopback are enforced too: configuring them is asking for them
        self.enforce_api = required or bool(self.api) or bool(self.admin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        denial = self.admit(scope)
        if denial is None:
            await self.app(scope, receive, send)
        else:
            await self.refuse(scope, send, denial)

    def admit(self, scope: Scope) -> tuple[int, str, str] | None:
        """None if the request may go on (and whether its caller is an operator is noted in its scope's state),
        else the refusal: (status, code, message)."""
        path = scope["path"]
        if path.startswith(ADMIN):
            denial = self._check_admin(scope)
        elif path.startswith(API) and not path.startswith(PUBLIC) and self.enforce_api:
            denial = self._check_api(scope)
        else:
            denial = None
        if denial is None:
            # whether this caller may see what only an operator should (model file paths): an admin key, or a
            # server with no keys at all
            token = self._presented(scope) if self.enforce_api else None
            scope.setdefault("state", {})["operator"] = not self.enforce_api or (
                bool(token) and bool(self.admin) and self.admin.holds(token or b""))
        return denial

    async def refuse(self, scope: Scope, send: Send, denial: tuple[int, str, str]) -> None:
        path = scope["path"]
        await _refuse(send, *denial, ollama=path.startswith(OLLAMA) and path not in OWN_API)

    def _presented(self, scope: Scope) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return token.strip() if scheme.lower() == b"bearer" and token.strip() else b""
        return None

    def _check_api(self, scope: Scope) -> tuple[int, str, str] | None:
        token = self._presented(scope)
        if token is None:
            return 401, "missing_api_key", ("You didn't provide an API key. Send it in the Authorization header: "
                                            "'Authorization: Bearer YOUR_KEY'.")
        if self.api.holds(token) or self.admin.holds(token):
            return None
        return 401, "invalid_api_key", "Incorrect API key provided."

    def _check_admin(self, scope: Scope) -> tuple[int, str, str] | None:
        if not self.admin:
            if self.loopback and not self.enforce_api:
                return None
            return 403, "admin_disabled", ("Admin endpoints need an admin key (auth.admin_keys or "
                                           "WARMSTART_ADMIN_KEYS) when API keys are in use or the server binds "
                                           "beyond loopback.")
        token = self._presented(scope)
        if token is None:
            return 401, "missing_api_key", "Admin endpoints need 'Authorization: Bearer ADMIN_KEY'."
        if self.admin.holds(token):
            return None
        if self.api.holds(token):
            return 403, "forbidden", "This key may use the API but not the admin endpoints."
        return 401, "invalid_api_key", "Incorrect admin key provided."


async def _refuse(send: Send, status: int, code: str, message: str, ollama: bool = False) -> None:
    kind = "authentication_error" if status == 401 else "permission_error"
    challenge = ((b"www-authenticate", b'Bearer realm="warmstart"'),) if status == 401 else ()
    body = {"error": message} if ollama else openai_error_body(message, kind, code)
    await send_json_error(send, status, body, challenge)
