"""CORS with an explicit allow-list: the gateway answers preflights itself and marks answers for listed origins.

Only origins named in the settings are echoed in ``Access-Control-Allow-Origin``; ``*`` is never sent (the
settings refuse it), so credentials can never be combined with a wildcard. Every answer carries ``Vary: Origin``
because it differs by origin, which keeps shared caches from serving one origin's answer to another.
Installed only when ``GATEWAY_CORS_ORIGINS`` lists at least one origin.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microshop_kit.app import problem_response
from microshop_kit.errors import ProblemError

_VARY = (b"vary", b"Origin")
_PREFLIGHT_VARY = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


class CorsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Iterable[str],
        methods: Iterable[str],
        headers: Iterable[str],
        expose: Iterable[str],
        credentials: bool,
        max_age: int,
    ) -> None:
        self.app = app
        self.origins = frozenset(origin.lower().encode("latin-1") for origin in origins)
        self.methods = frozenset(method.upper() for method in methods)
        self.headers = frozenset(name.lower() for name in headers)
        self.credentials = credentials
        self._preflight_headers = [
            (b"access-control-allow-methods", ", ".join(sorted(self.methods)).encode("latin-1")),
            (b"access-control-allow-headers", ", ".join(sorted(self.headers)).encode("latin-1")),
            (b"access-control-max-age", str(max_age).encode("latin-1")),
            _PREFLIGHT_VARY,
        ]
        exposed = ", ".join(expose).encode("latin-1")
        self._answer_headers = [(b"access-control-expose-headers", exposed)] if exposed else []
        if credentials:
            self._preflight_headers.append((b"access-control-allow-credentials", b"true"))
            self._answer_headers.append((b"access-control-allow-credentials", b"true"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin: bytes | None = None
        request_method: bytes | None = None
        request_headers = b""
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                request_method = value
            elif name == b"access-control-request-headers":
                request_headers = value
        if origin is not None and scope["method"] == "OPTIONS" and request_method is not None:
            await self._preflight(scope, receive, send, origin, request_method, request_headers)
            return
        added = [_VARY]
        if origin is not None and origin.lower() in self.origins:
            added = [(b"access-control-allow-origin", origin), *self._answer_headers, _VARY]

        async def marked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, marked_send)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, origin: bytes, method: bytes, requested: bytes
    ) -> None:
        refusal = self._refusal(origin, method, requested)
        if refusal is not None:
            response = problem_response(
                ProblemError(403, "Forbidden", refusal, type_="/problems/cors-not-allowed"), scope.get("path")
            )
            response.headers.append("vary", _PREFLIGHT_VARY[1].decode())
            await response(scope, receive, send)
            return
        headers = [(b"access-control-allow-origin", origin), *self._preflight_headers]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _refusal(self, origin: bytes, method: bytes, requested: bytes) -> str | None:
        """Why a preflight is refused, naming the origin, method or headers at fault; None when allowed."""
        if origin.lower() not in self.origins:
            return f"Origin {origin.decode('latin-1')!r} may not call this API from a browser."
        if method.decode("latin-1").upper() not in self.methods:
            return f"Method {method.decode('latin-1')!r} is not allowed cross-origin; allowed: {sorted(self.methods)}."
        names = {part.strip().lower() for part in requested.decode("latin-1").split(",") if part.strip()}
        refused = sorted(names - self.headers)
        if refused:
            return f"Header(s) {refused} are not allowed cross-origin; allowed: {sorted(self.headers)}."
        return None
