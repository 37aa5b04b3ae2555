"""CORS with an explicit allow-list: the gateway answers preflights itself and marks answers for listed origins.

Only origins named in the settings are echoed in ``Access-Control-Allow-Origin``; ``*`` is never sent (the
settings refuse it), so credentials can never be combined with a wildcard. Every answer carries ``Vary: Origin``
because it differs by origin, which keeps shared caches from serving one origin's answer to another.
Installed only when ``GATEWAY_CORS_ORIGINS`` lists at least one origin, as two middlewares over one policy:
``CorsPreflightMiddleware`` inside the kit's middleware (a preflight is logged and counted like any request) and
``CorsMiddleware`` outside it, so that the answers the kit's middleware gives itself (413 for a body too large,
500) are marked too: a browser can read those problems as well.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microshop_kit.app import problem_response
from microshop_kit.errors import ProblemError

_VARY = (b"vary", b"Origin")
_PREFLIGHT_VARY = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


@dataclass(frozen=True)
class Preflight:
    """What a preflight asks: from which origin, for which method and request headers."""

    origin: bytes
    method: bytes
    headers: bytes


def _request(scope: Scope) -> tuple[bytes | None, Preflight | None]:
    """The request's Origin, and the preflight it is (None when it is not one)."""
    origin: bytes | None = None
    method: bytes | None = None
    requested = b""
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value
        elif name == b"access-control-request-method":
            method = value
        elif name == b"access-control-request-headers":
            requested = value
    if origin is not None and method is not None and scope["method"] == "OPTIONS":
        return origin, Preflight(origin, method, requested)
    return origin, None


class CorsPolicy:
    """The allow-list and the headers answers and preflights carry, computed once from the settings."""

    def __init__(
        self,
        *,
        origins: Iterable[str],
        methods: Iterable[str],
        headers: Iterable[str],
        expose: Iterable[str],
        credentials: bool,
        max_age: int,
    ) -> None:
        self.origins = frozenset(origin.lower().encode("latin-1") for origin in origins)
        self.methods = frozenset(method.upper() for method in methods)
        self.headers = frozenset(name.lower() for name in headers)
        self.preflight_headers = [
            (b"access-control-allow-methods", ", ".join(sorted(self.methods)).encode("latin-1")),
            (b"access-control-allow-headers", ", ".join(sorted(self.headers)).encode("latin-1")),
            (b"access-control-max-age", str(max_age).encode("latin-1")),
            _PREFLIGHT_VARY,
        ]
        exposed = ", ".join(expose).encode("latin-1")
        self.answer_headers = [(b"access-control-expose-headers", exposed)] if exposed else []
        if credentials:
            self.preflight_headers.append((b"access-control-allow-credentials", b"true"))
            self.answer_headers.append((b"access-control-allow-credentials", b"true"))

    def refusal(self, preflight: Preflight) -> str | None:
        """Why a preflight is refused, naming the origin, method or headers at fault; None when allowed."""
        origin, method = preflight.origin.decode("latin-1"), preflight.method.decode("latin-1")
        if preflight.origin.lower() not in self.origins:
            return f"Origin {origin!r} may not call this API from a browser."
        if method.upper() not in self.methods:
            return f"Method {method!r} is not allowed cross-origin; allowed: {sorted(self.methods)}."
        names = {part.strip().lower() for part in preflight.headers.decode("latin-1").split(",") if part.strip()}
        refused = sorted(names - self.headers)
        if refused:
            return f"Header(s) {refused} are not allowed cross-origin; allowed: {sorted(self.headers)}."
        return None


class CorsMiddleware:
    """Marks every answer but a preflight's: ``Vary: Origin``, and for a listed origin the allow headers."""

    def __init__(self, app: ASGIApp, *, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin, preflight = _request(scope)
        if preflight is not None:  # answered inside, by CorsPreflightMiddleware, with its own headers
            await self.app(scope, receive, send)
            return
        added = [_VARY]
        if origin is not None and origin.lower() in self.policy.origins:
            added = [(b"access-control-allow-origin", origin), *self.policy.answer_headers, _VARY]

        async def marked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, marked_send)


class CorsPreflightMiddleware:
    """Answers preflights: 204 with what is allowed, or a 403 problem naming what is not."""

    def __init__(self, app: ASGIApp, *, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        preflight = _request(scope)[1] if scope["type"] == "http" else None
        if preflight is None:
            await self.app(scope, receive, send)
            return
        refusal = self.policy.refusal(preflight)
        if refusal is not None:
            response = problem_response(
                ProblemError(403, "Forbidden", refusal, type_="/problems/cors-not-allowed"), scope.get("path")
            )
            response.headers.append("vary", _PREFLIGHT_VARY[1].decode())
            await response(scope, receive, send)
            return
        headers = [(b"access-control-allow-origin", preflight.origin), *self.policy.preflight_headers]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
