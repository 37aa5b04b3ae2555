"""A visitor's state, kept in cookies: the sign-in tokens, the guest cart and the CSRF seed.

The storefront keeps no session store: the tokens the users service issued travel in an HttpOnly cookie and
are sent on to the gateway as a bearer token. The access token is refreshed (and the refresh token rotated)
when it is about to run out or is refused; one refresh per refresh token runs at a time in a process, and its
result is reused for a minute, so two pages loading at once do not spend the same refresh token twice (the
users service would take that as theft and revoke the family).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microshop_storefront.clients import Accounts, ApiError, Unauthorized
from microshop_storefront.domain import MAX_CART_LINES, MAX_QUANTITY

SESSION_COOKIE = "ms_session"
CSRF_COOKIE = "ms_csrf"
CART_COOKIE = "ms_cart"
CSRF_FIELD = "csrf_token"
#: Refresh this long before the access token runs out, so a call never starts with a token about to die.
REFRESH_MARGIN = 30.0
REUSE_REFRESH_FOR = 60.0
T = TypeVar("T")


class SignInRequired(Exception):
    """The page needs a signed-in customer and there is none (or the session ran out)."""


class CsrfRefused(Exception):
    """A form post came without this visitor's CSRF token."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _decode_json(text: str) -> Any:
    try:
        return orjson.loads(_unb64(text))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str

    @cached_property
    def claims(self) -> dict[str, Any]:
        """The access token's claims, read without checking the signature: for display and timing only (the
        gateway and the services verify every token they are given)."""
        parts = self.access.split(".")
        claims = _decode_json(parts[1]) if len(parts) == 3 else None
        return claims if isinstance(claims, dict) else {}

    @property
    def roles(self) -> list[str]:
        roles = self.claims.get("roles")
        return [str(role) for role in roles] if isinstance(roles, list) else []

    @property
    def email(self) -> str:
        return str(self.claims.get("email") or "")

    def expiring(self, margin: float = REFRESH_MARGIN) -> bool:
        exp = self.claims.get("exp")
        return not isinstance(exp, int | float) or exp - margin <= time.time()

    def encode(self) -> str:
        return _b64(orjson.dumps({"a": self.access, "r": self.refresh}))

    @classmethod
    def decode(cls, raw: str | None) -> Tokens | None:
        body = _decode_json(raw) if raw else None
        if not isinstance(body, dict):
            return None
        access, refresh = body.get("a"), body.get("r")
        if not isinstance(access, str) or not isinstance(refresh, str) or not access or not refresh:
            return None
        return cls(access, refresh)


def decode_guest_cart(raw: str | None) -> dict[str, tuple[str, int]]:
    """The guest cart cookie: ``{sku: (product id, quantity)}``; anything malformed is dropped."""
    body = _decode_json(raw) if raw else None
    result: dict[str, tuple[str, int]] = {}
    if not isinstance(body, list):
        return result
    for item in body[:MAX_CART_LINES]:
        if (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and isinstance(item[2], int)
            and 0 < item[2] <= MAX_QUANTITY
            and 0 < len(item[0]) <= 64
            and 0 < len(item[1]) <= 64
        ):
            result[item[0]] = (item[1], item[2])
    return result


def encode_guest_cart(lines: dict[str, tuple[str, int]]) -> str:
    return _b64(orjson.dumps([[sku, pid, qty] for sku, (pid, qty) in lines.items()]))


@dataclass
class Visitor:
    """One request's view of the visitor's cookies, and the cookies the answer must set."""

    tokens: Tokens | None
    csrf_seed: str | None
    guest_cart: dict[str, tuple[str, int]]
    secure: bool
    session_max_age: int
    outgoing: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def signed_in(self) -> bool:
        return self.tokens is not None

    @property
    def is_admin(self) -> bool:
        return self.tokens is not None and "admin" in self.tokens.roles

    def csrf_token(self, key: bytes) -> str:
        """The token this visitor's forms carry: an HMAC of the seed in its CSRF cookie (minted on first use)."""
        if self.csrf_seed is None:
            self.csrf_seed = secrets.token_urlsafe(24)
            self.outgoing[CSRF_COOKIE] = (self.csrf_seed, self.session_max_age)
        return hmac.new(key, self.csrf_seed.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, key: bytes, sent: object) -> bool:
        if self.csrf_seed is None or CSRF_COOKIE in self.outgoing or not isinstance(sent, str):
            return False
        expected = hmac.new(key, self.csrf_seed.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, sent)

    def keep_tokens(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.outgoing[SESSION_COOKIE] = (tokens.encode(), self.session_max_age)

    def forget_tokens(self) -> None:
        self.tokens = None
        self.outgoing[SESSION_COOKIE] = ("", 0)

    def save_guest_cart(self) -> None:
        if self.guest_cart:
            self.outgoing[CART_COOKIE] = (encode_guest_cart(self.guest_cart), self.session_max_age)
        else:
            self.outgoing[CART_COOKIE] = ("", 0)

    def set_cookie_headers(self) -> list[tuple[bytes, bytes]]:
        headers = []
        for name, (value, max_age) in self.outgoing.items():
            attributes = f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
            if self.secure:
                attributes += "; Secure"
            headers.append((b"set-cookie", attributes.encode("latin-1")))
        return headers


def read_visitor(connection: HTTPConnection, session_max_age: int, secure_mode: str) -> Visitor:
    """The visitor of this request (parsed once and kept on the request state)."""
    cached: Visitor | None = getattr(connection.state, "visitor", None)
    if cached is not None:
        return cached
    cookies = connection.cookies
    seed = cookies.get(CSRF_COOKIE)
    if secure_mode == "auto":
        proto = connection.headers.get("x-forwarded-proto", connection.url.scheme)
        secure = proto.split(",")[0].strip().lower() == "https"
    else:
        secure = secure_mode == "always"
    visitor = Visitor(
        tokens=Tokens.decode(cookies.get(SESSION_COOKIE)),
        csrf_seed=seed if seed and 16 <= len(seed) <= 64 else None,
        guest_cart=decode_guest_cart(cookies.get(CART_COOKIE)),
        secure=secure,
        session_max_age=session_max_age,
    )
    connection.state.visitor = visitor
    return visitor


class CookieMiddleware:
    """Adds the cookies a request's visitor changed to its answer, whatever produced the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                visitor = (scope.get("state") or {}).get("visitor")
                if isinstance(visitor, Visitor) and visitor.outgoing:
                    message["headers"] = [*message.get("headers", []), *visitor.set_cookie_headers()]
                    if not any(name.lower() == b"cache-control" for name, _ in message["headers"]):
                        message["headers"].append((b"cache-control", b"private, no-store"))
            await send(message)

        await self.app(scope, receive, send_with_cookies)


def csrf_key(secret: str | None, data_dir: Path) -> bytes:
    """The CSRF signing key: the configured secret, else one kept in ``data_dir/csrf.key``."""
    if secret:
        return secret.encode()
    path = data_dir / "csrf.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_bytes()


class Sessions:
    """Runs calls with a visitor's access token, refreshing it once when it is about to expire or refused."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self._inflight: dict[str, asyncio.Future[Tokens]] = {}
        self._recent: dict[str, tuple[float, Tokens]] = {}

    async def call(self, visitor: Visitor, action: Callable[[str], Awaitable[T]]) -> T:
        if visitor.tokens is None:
            raise SignInRequired
        if visitor.tokens.expiring():
            await self.refresh(visitor)
        assert visitor.tokens is not None
        try:
            return await action(visitor.tokens.access)
        except Unauthorized:
            await self.refresh(visitor)
        assert visitor.tokens is not None
        try:
            return await action(visitor.tokens.access)
        except Unauthorized as exc:
            visitor.forget_tokens()
            raise SignInRequired from exc

    async def refresh(self, visitor: Visitor) -> None:
        assert visitor.tokens is not None
        key = hashlib.sha256(visitor.tokens.refresh.encode()).hexdigest()
        now = time.monotonic()
        self._recent = {k: v for k, v in self._recent.items() if now - v[0] < REUSE_REFRESH_FOR}
        if key in self._recent:
            visitor.keep_tokens(self._recent[key][1])
            return
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._exchange(key, visitor.tokens.refresh))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        try:
            tokens = await asyncio.shield(pending)
        except ApiError as exc:  # the refresh token ran out or was revoked: sign in again
            visitor.forget_tokens()
            raise SignInRequired from exc
        visitor.keep_tokens(tokens)

    async def _exchange(self, key: str, refresh_token: str) -> Tokens:
        body = await self.accounts.refresh(refresh_token)
        tokens = Tokens(str(body["access_token"]), str(body["refresh_token"]))
        # Recorded before the waiters wake, so a request arriving in between finds it and does not spend the
        # old refresh token a second time.
        self._recent[key] = (time.monotonic(), tokens)
        return tokens
