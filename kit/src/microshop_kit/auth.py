"""Access-token verification against the users service's JWKS, following RFC 8725 (JWT best practices).

Only EdDSA (Ed25519) is accepted, keys come only from the configured JWKS URL (never from ``jku``/``jwk``/
``x5u``/``x5c`` headers), and ``iss``, ``aud``, ``exp``, ``iat``, ``sub`` and ``jti`` are required. Keys are
fetched with the shared aiohttp pool (PyJWKClient would do blocking urllib I/O on the event loop) and cached;
an unknown ``kid`` refetches at most once per ``refetch_seconds``, so random kids cannot hammer users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import aiohttp
import jwt
import orjson

from microshop_kit.errors import AuthError, ProblemError, unauthorized
from microshop_kit.http import HttpPool
from microshop_kit.log import get_logger

log = get_logger("microshop.auth")

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "jti"]
_FORBIDDEN_HEADERS = ("jku", "jwk", "x5u", "x5c")
_MAX_TOKEN_CHARS = 8192
_EMPTY_CACHE_RETRY_SECONDS = 1.0  # with no key at all every request fails, so retry sooner than for a kid
_DECODE_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not valid yet"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
)


class AuthUnavailable(AuthError):
    """The signing keys cannot be fetched and none are cached: answer 503, not 401."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    user_id: str
    roles: frozenset[str]
    email: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        sub, roles, email = claims.get("sub"), claims.get("roles", []), claims.get("email")
        if not isinstance(sub, str) or not sub:
            raise AuthError("claim 'sub' must be a non-empty string")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise AuthError("claim 'roles' must be a list of strings")
        if email is not None and not isinstance(email, str):
            raise AuthError("claim 'email' must be a string")
        return cls(sub, frozenset(roles), email, MappingProxyType(dict(claims)))


class JwksVerifier:
    """Verifies access tokens with the keys published at ``jwks_url``."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        pool: HttpPool,
        *,
        cache_seconds: float = 300.0,
        refetch_seconds: float = 10.0,
        leeway: float = 30.0,
        fetch_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_verified: int = 4096,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.refetch_seconds = refetch_seconds
        self.leeway = leeway
        self.fetch_timeout = fetch_timeout
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._lock = asyncio.Lock()
        #: Tokens already verified: token -> (principal, exp, kid). A client sends the same access token with
        #: every request until it expires, and a signature check costs ~100 us of CPU; a kept one stands while
        #: the token has not expired, its key is still published and the keys are fresh.
        self._verified: dict[str, tuple[Principal, float, str]] = {}
        self.max_verified = max_verified

    async def verify(self, token: str) -> Principal:
        """The principal a token speaks for; raises AuthError (AuthUnavailable: no keys), short reason."""
        kept = self._verified.get(token)
        if kept is not None:
            principal, expires, kept_kid = kept
            fresh = self._fetched_at is not None and self._clock() - self._fetched_at < self.cache_seconds
            if fresh and kept_kid in self._keys and time.time() < expires:
                return principal
            del self._verified[token]
        kid = _checked_kid(token)
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"claim {exc.claim!r} is missing") from exc
        except jwt.PyJWTError as exc:
            reason = next((text for kind, text in _DECODE_REASONS if isinstance(exc, kind)), "invalid token")
            raise AuthError(reason) from exc
        principal = Principal.from_claims(claims)
        if len(self._verified) >= self.max_verified:
            del self._verified[next(iter(self._verified))]  # the oldest kept
        self._verified[token] = (principal, float(claims["exp"]), kid)
        return principal

    async def refresh(self) -> None:
        """Fetch the JWKS now (e.g. at start-up); raises AuthUnavailable when it cannot be fetched."""
        async with self._lock:
            await self._fetch_into_cache()

    async def _key(self, kid: str) -> jwt.PyJWK:
        stale = self._fetched_at is None or self._clock() - self._fetched_at >= self.cache_seconds
        if stale or kid not in self._keys:
            await self._refresh_if_allowed()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._keys:
            raise AuthUnavailable(f"no signing keys: {self.jwks_url} could not be fetched")
        raise AuthError(f"unknown key id {kid[:64]!r}")

    async def _refresh_if_allowed(self) -> None:
        async with self._lock:  # one fetch at a time; waiters then find the fresh keys or the rate limit
            if self._attempted_at is not None:
                interval = self.refetch_seconds if self._keys else _EMPTY_CACHE_RETRY_SECONDS
                if self._clock() - self._attempted_at < interval:
                    return
            try:
                await self._fetch_into_cache()
            except AuthUnavailable as exc:
                # Keep serving the keys we have: a users outage must not log everybody out.
                log.warning("jwks refresh failed", url=self.jwks_url, error=str(exc), cached=len(self._keys))

    async def _fetch_into_cache(self) -> None:
        self._attempted_at = self._clock()
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        try:
            session = self.pool.session()
            async with session.get(self.jwks_url, timeout=timeout, allow_redirects=False) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AuthUnavailable(f"{self.jwks_url} unreachable ({exc!r})") from exc
        if response.status != 200:
            raise AuthUnavailable(f"{self.jwks_url} answered {response.status}")
        self._keys = _parse_jwks(body, self.jwks_url)
        self._fetched_at = self._clock()


def _checked_kid(token: str) -> str:
    """Reject, before any key lookup, a token whose header asks for anything but our own EdDSA keys."""
    if len(token) > _MAX_TOKEN_CHARS:
        raise AuthError("token too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError("malformed token") from exc
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise AuthError(f"header {name!r} is not allowed")
    if header.get("alg") != ALGORITHM:
        raise AuthError(f"algorithm {str(header.get('alg'))[:16]!r} is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("header 'kid' is missing")
    return kid


def _parse_jwks(body: bytes, url: str) -> dict[str, jwt.PyJWK]:
    """The Ed25519 signing keys of a JWKS document, by kid; other keys are skipped."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AuthUnavailable(f"{url} did not answer JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519" or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError:
            continue
    if not keys:
        raise AuthUnavailable(f"{url} holds no usable Ed25519 key")
    return keys


async def principal_from_authorization(verifier: JwksVerifier, header: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer <token>`` header; else a 401 problem (503: no keys)."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("A bearer access token is required.")
    try:
        return await verifier.verify(token)
    except AuthUnavailable as exc:
        # Not a 401: the token may be fine, and a 401 would make clients drop it and sign the user out.
        raise ProblemError(
            503,
            "Service Unavailable",
            "Access tokens cannot be checked right now; try again shortly.",
            type_="/problems/auth-unavailable",
            headers={"Retry-After": "2"},
        ) from exc
    except AuthError as exc:
        problem = unauthorized(f"Invalid access token: {exc}.")
        problem.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'  # RFC 6750 section 3.1
        raise problem from exc
