"""Security headers on every answer the gateway gives, proxied or its own (404, 401, 503, 413)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: dict[bytes, bytes] = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"strict-origin-when-cross-origin",
    b"x-frame-options": b"DENY",
}
FRAME_ANCESTORS = b"frame-ancestors 'none'"


def _with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name.lower() not in SECURITY_HEADERS]
    kept.extend(SECURITY_HEADERS.items())
    policies = [value for name, value in kept if name.lower() == b"content-security-policy"]
    if not policies:
        kept.append((b"content-security-policy", FRAME_ANCESTORS))
        return kept
    # An upstream's own policy is kept (the storefront may set one), but framing is always refused.
    result = [(name, value) for name, value in kept if name.lower() != b"content-security-policy"]
    for policy in policies:
        if b"frame-ancestors" not in policy.lower():
            policy = policy.rstrip(b"; ") + b"; " + FRAME_ANCESTORS
        result.append((b"content-security-policy", policy))
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
