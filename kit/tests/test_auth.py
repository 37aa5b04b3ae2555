"""JwksVerifier against real Ed25519 keys served as a JWKS by a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from microshop_kit.auth import AuthUnavailable, JwksVerifier, Principal, principal_from_authorization
from microshop_kit.errors import AuthError, ProblemError
from microshop_kit.http import HttpPool
from microshop_kit.testing import serve_aiohttp

ISSUER, AUDIENCE = "microshop-users", "microshop"


class SigningKey:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.kid = secrets.token_hex(8)

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "EdDSA"}

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, headers: dict[str, Any] | None = None, **changes: Any) -> str:
        return jwt.encode(claims(**changes), self.key, algorithm="EdDSA", headers={"kid": self.kid, **(headers or {})})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 900,
        "jti": secrets.token_hex(8),
        "roles": ["customer"],
        "email": "ann@example.com",
    }
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A token built without PyJWT, so its guards cannot stop us forging one."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


class Jwks:
    """The users service's JWKS endpoint: serves ``keys``, counts hits, can fail with ``status``."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.status = 200
        self.url = ""

    async def handle(self, _: web.Request) -> web.Response:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response({"keys": self.keys})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
async def jwks(key: SigningKey) -> AsyncIterator[Jwks]:
    server = Jwks()
    server.keys.append(key.jwk())
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", server.handle)
    async with serve_aiohttp(app) as base:
        server.url = f"{base}/.well-known/jwks.json"
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(jwks: Jwks, pool: HttpPool, clock: FakeClock) -> JwksVerifier:
    return JwksVerifier(jwks.url, ISSUER, AUDIENCE, pool, clock=clock)


async def rejected(verifier: JwksVerifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    return str(caught.value)


# -- accepted -----------------------------------------------------------------------------------------------


async def test_valid_token_gives_its_principal(verifier: JwksVerifier, key: SigningKey) -> None:
    principal = await verifier.verify(key.token(sub="user-7", roles=["customer", "admin"]))
    assert principal.user_id == "user-7"
    assert principal.roles == frozenset({"customer", "admin"})
    assert principal.is_admin
    assert principal.email == "ann@example.com"
    assert principal.claims["iss"] == ISSUER


async def test_token_just_past_exp_is_accepted_within_leeway(verifier: JwksVerifier, key: SigningKey) -> None:
    now = int(time.time())
    assert (await verifier.verify(key.token(iat=now - 900, exp=now - 10))).user_id == "user-1"


async def test_customer_is_not_admin(verifier: JwksVerifier, key: SigningKey) -> None:
    assert not (await verifier.verify(key.token())).is_admin


# -- rejected -----------------------------------------------------------------------------------------------


async def test_alg_none_is_rejected(verifier: JwksVerifier, key: SigningKey) -> None:
    token = hand_made({"alg": "none", "kid": key.kid, "typ": "JWT"}, claims())
    assert "algorithm" in await rejected(verifier, token)


async def test_hs256_signed_with_the_public_key_is_rejected(verifier: JwksVerifier, key: SigningKey) -> None:
    for secret in (key.public_pem(), key.jwk()["x"].encode()):
        token = hand_made(
            {"alg": "HS256", "kid": key.kid},
            claims(),
            lambda data, s=secret: hmac.new(s, data, hashlib.sha256).digest(),
        )
        assert "algorithm" in await rejected(verifier, token)


async def test_hs256_header_naming_eddsa_key_but_hmac_signature_is_rejected(
    verifier: JwksVerifier, key: SigningKey
) -> None:
    secret = key.public_pem()
    token = hand_made(
        {"alg": "EdDSA", "kid": key.kid}, claims(), lambda d: hmac.new(secret, d, hashlib.sha256).digest()
    )
    assert await rejected(verifier, token) == "bad signature"


async def test_rs256_is_rejected_even_with_its_key_in_the_jwks(
    verifier: JwksVerifier, jwks: Jwks, key: SigningKey
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk: dict[str, Any] = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    jwks.keys.append({**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"})
    for kid in ("rsa-1", key.kid):
        token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": kid})
        assert "algorithm" in await rejected(verifier, token)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 120}, "token expired"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"iat": int(time.time()) + 3600}, "token not valid yet"),
        ({"sub": None}, "claim 'sub' is missing"),
        ({"jti": None}, "claim 'jti' is missing"),
        ({"exp": None}, "claim 'exp' is missing"),
        ({"iat": None}, "claim 'iat' is missing"),
        ({"aud": None}, "claim 'aud' is missing"),
        ({"iss": None}, "claim 'iss' is missing"),
        ({"sub": ""}, "claim 'sub' must be a non-empty string"),
        ({"roles": "admin"}, "claim 'roles' must be a list of strings"),
    ],
)
async def test_bad_claims_are_rejected(
    verifier: JwksVerifier, key: SigningKey, changes: dict[str, Any], reason: str
) -> None:
    assert await rejected(verifier, key.token(**changes)) == reason


async def test_tampered_payload_is_rejected(verifier: JwksVerifier, key: SigningKey) -> None:
    header, _, signature = key.token().split(".")
    forged = b64(json.dumps(claims(roles=["admin"])).encode())
    assert await rejected(verifier, f"{header}.{forged}.{signature}") == "bad signature"


@pytest.mark.parametrize("name", ["jku", "jwk", "x5u", "x5c"])
async def test_key_carrying_headers_are_rejected(verifier: JwksVerifier, key: SigningKey, name: str) -> None:
    attacker = SigningKey()
    values: dict[str, Any] = {
        "jku": "http://127.0.0.1:1/evil.json",
        "jwk": attacker.jwk(),
        "x5u": "http://127.0.0.1:1/c.pem",
        "x5c": ["MII"],
    }
    # Signed with our real key, so only the header itself can be the reason.
    assert await rejected(verifier, key.token(headers={name: values[name]})) == f"header {name!r} is not allowed"


async def test_embedded_attacker_jwk_does_not_verify(verifier: JwksVerifier, key: SigningKey) -> None:
    attacker = SigningKey()
    attacker.kid = key.kid
    token = attacker.token(headers={"jwk": attacker.jwk()})
    assert await rejected(verifier, token) == "header 'jwk' is not allowed"
    no_header = attacker.token()  # same kid as ours, wrong key
    assert await rejected(verifier, no_header) == "bad signature"


async def test_missing_kid_and_garbage_are_rejected_without_fetching(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks
) -> None:
    no_kid = jwt.encode(claims(), key.key, algorithm="EdDSA")
    assert await rejected(verifier, no_kid) == "header 'kid' is missing"
    assert await rejected(verifier, "not.a.token") == "malformed token"
    assert await rejected(verifier, "x" * 10_000) == "token too long"
    assert jwks.hits == 0


# -- keys, rotation, rate limits ----------------------------------------------------------------------------


async def test_unknown_kid_is_rejected_after_one_refetch(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks, clock: FakeClock
) -> None:
    await verifier.verify(key.token())
    assert jwks.hits == 1
    clock.now += 10
    stranger = SigningKey()
    assert "unknown key id" in await rejected(verifier, stranger.token())
    assert jwks.hits == 2


async def test_rotated_in_key_is_accepted_after_one_refetch(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks, clock: FakeClock
) -> None:
    await verifier.verify(key.token())
    new_key = SigningKey()
    jwks.keys.append(new_key.jwk())
    clock.now += 10
    assert (await verifier.verify(new_key.token(sub="user-2"))).user_id == "user-2"
    assert (await verifier.verify(key.token())).user_id == "user-1"
    assert jwks.hits == 2


async def test_flood_of_random_kids_refetches_once_per_interval(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks, clock: FakeClock
) -> None:
    await verifier.verify(key.token())
    clock.now += 10

    async def attempt() -> None:
        with pytest.raises(AuthError, match="unknown key id"):
            await verifier.verify(SigningKey().token())

    await asyncio.gather(*(attempt() for _ in range(50)))
    assert jwks.hits == 2
    clock.now += 9.9
    await attempt()
    assert jwks.hits == 2
    clock.now += 0.1
    await attempt()
    assert jwks.hits == 3


async def test_concurrent_first_requests_fetch_the_jwks_once(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks
) -> None:
    principals = await asyncio.gather(*(verifier.verify(key.token()) for _ in range(20)))
    assert len(principals) == 20
    assert jwks.hits == 1


async def test_keys_are_refreshed_after_cache_seconds(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks, clock: FakeClock
) -> None:
    await verifier.verify(key.token())
    clock.now += 299
    await verifier.verify(key.token())
    assert jwks.hits == 1
    jwks.keys = [SigningKey().jwk()]  # our key is revoked
    clock.now += 1
    assert "unknown key id" in await rejected(verifier, key.token())
    assert jwks.hits == 2


async def test_jwks_down_with_no_cached_key_is_auth_unavailable(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks, clock: FakeClock
) -> None:
    jwks.status = 503
    with pytest.raises(AuthUnavailable):
        await verifier.verify(key.token())
    with pytest.raises(AuthUnavailable):
        await verifier.verify(key.token())
    assert jwks.hits == 1  # the retry waits a second
    jwks.status = 200
    clock.now += 1
    assert (await verifier.verify(key.token())).user_id == "user-1"


async def test_unreachable_jwks_is_auth_unavailable(pool: HttpPool, key: SigningKey) -> None:
    verifier = JwksVerifier("http://127.0.0.1:9/.well-known/jwks.json", ISSUER, AUDIENCE, pool)
    with pytest.raises(AuthUnavailable):
        await verifier.verify(key.token())
    with pytest.raises(AuthUnavailable):
        await verifier.refresh()


async def test_jwks_down_with_cached_key_keeps_verifying(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks, clock: FakeClock
) -> None:
    await verifier.verify(key.token())
    jwks.status = 500
    clock.now += 600  # the cache is stale and the refetch fails: the keys we hold still serve
    assert (await verifier.verify(key.token())).user_id == "user-1"
    assert jwks.hits == 2


async def test_jwks_with_only_foreign_keys_is_unusable(verifier: JwksVerifier, key: SigningKey, jwks: Jwks) -> None:
    jwks.keys = [{"kty": "oct", "k": b64(b"secret"), "kid": key.kid}, {**key.jwk(), "use": "enc"}]
    with pytest.raises(AuthUnavailable):
        await verifier.verify(key.token())


# -- the Authorization header -------------------------------------------------------------------------------


async def test_bearer_header_gives_principal(verifier: JwksVerifier, key: SigningKey) -> None:
    principal = await principal_from_authorization(verifier, f"bearer  {key.token(sub='user-9')}")
    assert principal == Principal("user-9", frozenset({"customer"}), "ann@example.com")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
async def test_missing_or_foreign_scheme_is_401(verifier: JwksVerifier, header: str | None) -> None:
    with pytest.raises(ProblemError) as caught:
        await principal_from_authorization(verifier, header)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == "Bearer"


async def test_invalid_token_is_401_with_reason(verifier: JwksVerifier, key: SigningKey) -> None:
    with pytest.raises(ProblemError) as caught:
        await principal_from_authorization(verifier, f"Bearer {key.token(aud='x')}")
    assert caught.value.status == 401
    assert caught.value.detail == "Invalid access token: wrong audience."
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_keys_unavailable_is_503_not_401(verifier: JwksVerifier, key: SigningKey, jwks: Jwks) -> None:
    jwks.status = 503
    with pytest.raises(ProblemError) as caught:
        await principal_from_authorization(verifier, f"Bearer {key.token()}")
    assert caught.value.status == 503
    assert caught.value.type_ == "/problems/auth-unavailable"


# -- verified tokens kept -----------------------------------------------------------------------------------


async def test_a_kept_token_stands_only_while_its_key_is_published(
    verifier: JwksVerifier, key: SigningKey, jwks: Jwks, clock: FakeClock
) -> None:
    token = key.token(sub="user-9")
    assert (await verifier.verify(token)).user_id == "user-9"
    jwks.keys = [SigningKey().jwk()]  # the key is withdrawn
    clock.now += 299
    assert (await verifier.verify(token)).user_id == "user-9"  # keys not yet due for a refresh
    clock.now += 1
    assert "unknown key id" in await rejected(verifier, token)
    assert "unknown key id" in await rejected(verifier, token)


async def test_a_kept_token_is_refused_once_it_expires(jwks: Jwks, pool: HttpPool, key: SigningKey) -> None:
    verifier = JwksVerifier(jwks.url, ISSUER, AUDIENCE, pool, leeway=0)
    now = int(time.time())
    token = key.token(iat=now, exp=now + 1)
    assert (await verifier.verify(token)).user_id == "user-1"
    await asyncio.sleep(now + 1.05 - time.time())
    assert "expired" in await rejected(verifier, token)


async def test_the_kept_tokens_are_bounded(jwks: Jwks, pool: HttpPool, key: SigningKey) -> None:
    verifier = JwksVerifier(jwks.url, ISSUER, AUDIENCE, pool, max_verified=3)
    tokens = [key.token(sub=f"user-{n}") for n in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._verified) == tokens[2:]
