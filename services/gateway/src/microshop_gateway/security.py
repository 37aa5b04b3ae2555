"""Security headers on every answer the gateway gives, proxied or its own (404, 401, 503, 413)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: dict[bytes, bytes] = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"strict-origin-when-cross-origin",
    b"x-frame-options": b"DENY",
}
FRAME_ANCESTORS = b"frame-ancestors 'none'"


_ADDED = list(SECURITY_HEADERS.items())


def _with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    result: list[tuple[bytes, bytes]] = []
    framed = False
    for name, value in headers:
        lower = name.lower()
        if lower in SECURITY_HEADERS:
            continue
        if lower == b"content-security-policy":
            # An upstream's own policy is kept (the storefront may set one), but framing is always refused.
            if b"frame-ancestors" not in value.lower():
                value = value.rstrip(b"; ") + b"; " + FRAME_ANCESTORS
            framed = True
        result.append((name, value))
    result.extend(_ADDED)
    if not framed:
        result.append((b"content-security-policy", FRAME_ANCESTORS))
    return result


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, secured_send)
