"""Token checks at the gateway: before any upstream call, and the verified identity passed on."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

from microshop_kit.testing import JwtIssuer

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def alg_none_token(issuer: JwtIssuer, sub: str) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": sub,
        "iat": now,
        "exp": now + 600,
        "jti": "x",
        "roles": ["admin"],
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': issuer.kid})}.{_b64(claims)}."


def bad_authorizations(issuer: JwtIssuer) -> dict[str, str | None]:
    return {
        "missing": None,
        "not bearer": "Basic dXNlcjpwYXNz",
        "garbage": "Bearer not-a-token",
        "alg none": f"Bearer {alg_none_token(issuer, 'u-1')}",
        "foreign key": f"Bearer {JwtIssuer().token('u-1')}",
        "expired": f"Bearer {issuer.token('u-1', ttl=-120)}",
        "wrong audience": f"Bearer {JwtIssuer(audience='elsewhere').token('u-1')}",
    }


@pytest.mark.parametrize(
    "case", ["missing", "not bearer", "garbage", "alg none", "foreign key", "expired", "wrong audience"]
)
async def test_token_routes_refuse_a_missing_or_bad_token_before_any_upstream_call(
    gateway: httpx.AsyncClient, upstreams: Upstreams, issuer: JwtIssuer, case: str
) -> None:
    authorization = bad_authorizations(issuer)[case]
    headers = {"Authorization": authorization} if authorization else {}

    response = await gateway.get("/api/v1/orders", headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert upstreams["orders"].calls == []


async def test_verified_subject_and_token_are_passed_on(
    gateway: httpx.AsyncClient, upstreams: Upstreams, issuer: JwtIssuer
) -> None:
    headers = {**issuer.headers("user-42"), "X-User-Id": "someone-else"}

    response = await gateway.get("/api/v1/users/me", headers=headers)

    sent = response.json()["headers"]
    assert sent["x-user-id"] == "user-42"
    assert [v for k, v in response.json()["raw_headers"] if k == "x-user-id"] == ["user-42"]
    assert sent["authorization"] == headers["Authorization"]


async def test_public_routes_pass_no_identity(gateway: httpx.AsyncClient, issuer: JwtIssuer) -> None:
    response = await gateway.get("/api/v1/products", headers={**issuer.headers("u-1"), "X-User-Id": "forged"})

    assert response.status_code == 200
    assert "x-user-id" not in response.json()["headers"]


async def test_optional_routes_identify_a_valid_token_and_ignore_a_bad_one(
    gateway: httpx.AsyncClient, issuer: JwtIssuer
) -> None:
    signed_in = await gateway.get("/", headers=issuer.headers("user-7"))
    stale = await gateway.get("/", headers={"Authorization": f"Bearer {issuer.token('user-7', ttl=-120)}"})
    anonymous = await gateway.get("/")

    assert signed_in.json()["headers"]["x-user-id"] == "user-7"
    assert stale.status_code == 200 and "x-user-id" not in stale.json()["headers"]
    assert anonymous.status_code == 200 and "x-user-id" not in anonymous.json()["headers"]
