"""Accounts end to end, real processes: forged tokens refused by the gateway and by users itself, one customer
cannot touch another's profile or addresses, and sign-in locks an account (only that one) after 10 failures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from microshop_launcher import Platform

from .conftest import Shop

pytestmark = pytest.mark.e2e

ADDRESS = {
    "name": "Bea Buyer",
    "line1": "2 Difference Lane",
    "city": "Leeds",
    "postal_code": "LS1 4AP",
    "country": "GB",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


class Forger:
    """Builds the tokens an attacker would try, with the platform's real signing key where the attack needs a
    genuine signature (so only the claim under test is wrong)."""

    def __init__(self, platform: Platform, user_id: str) -> None:
        keys = sorted((platform.root / "users" / "keys").glob("users-signing-*.pem"))
        assert len(keys) == 1, keys
        self.kid = keys[0].name.removeprefix("users-signing-").removesuffix(".pem")
        private = serialization.load_pem_private_key(keys[0].read_bytes(), password=None)
        assert isinstance(private, Ed25519PrivateKey)
        self.key = private
        self.user_id = user_id
        self.attacker = Ed25519PrivateKey.generate()

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": "microshop-users",
            "aud": "microshop",
            "sub": self.user_id,
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_hex(8),
            "roles": ["customer"],
            "email": "someone@example.com",
        }
        return {**claims, **changes}

    def genuine(self, **changes: Any) -> str:
        return jwt.encode(self.claims(**changes), self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def attacks(self) -> dict[str, str]:
        now = int(time.time())
        public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public_raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        attacker_jwk: dict[str, Any] = OKPAlgorithm.to_jwk(self.attacker.public_key(), as_dict=True)
        genuine = self.genuine().split(".")
        tampered_payload = _segment(self.claims(roles=["admin"], sub=str(uuid.uuid4())))
        return {
            "alg none": f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(self.claims())}.",
            "alg none with kid": f"{_segment({'alg': 'none', 'kid': self.kid})}.{_segment(self.claims())}.",
            "HS256 keyed with the public PEM": self._hs256(public_pem),
            "HS256 keyed with the raw public key": self._hs256(public_raw),
            "HS256 keyed with the JWK x": self._hs256(_b64(public_raw).encode()),
            "expired 61 s ago": self.genuine(iat=now - 961, exp=now - 61),
            "wrong aud": self.genuine(aud="some-other-api"),
            "no aud": self._without("aud"),
            "wrong iss": self.genuine(iss="https://evil.example"),
            "foreign kid": jwt.encode(self.claims(), self.attacker, algorithm="EdDSA", headers={"kid": "attacker"}),
            "real kid, foreign key": jwt.encode(
                self.claims(), self.attacker, algorithm="EdDSA", headers={"kid": self.kid}
            ),
            "tampered payload": f"{genuine[0]}.{tampered_payload}.{genuine[2]}",
            "jku elsewhere": jwt.encode(
                self.claims(),
                self.attacker,
                algorithm="EdDSA",
                headers={"kid": "attacker", "jku": "http://127.0.0.1:9/.well-known/jwks.json"},
            ),
            "jwk embedded": jwt.encode(
                self.claims(), self.attacker, algorithm="EdDSA", headers={"kid": "attacker", "jwk": attacker_jwk}
            ),
            "jku with the real kid": jwt.encode(
                self.claims(),
                self.key,
                algorithm="EdDSA",
                headers={"kid": self.kid, "jku": "http://127.0.0.1:9/.well-known/jwks.json"},
            ),
        }

    def _hs256(self, secret: bytes) -> str:
        signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': self.kid})}.{_segment(self.claims())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def _without(self, claim: str) -> str:
        claims = self.claims()
        del claims[claim]
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def direct(platform: Platform) -> Iterator[httpx.Client]:
    """A client of the users service's own port, past the gateway."""
    with httpx.Client(base_url=platform.url("users"), timeout=30) as client:
        yield client


def _customer(shop_for: Callable[[Platform], Shop], platform: Platform) -> tuple[Shop, str]:
    shop = shop_for(platform)
    user_id = str(shop.sign_up()["id"])
    shop.sign_in()
    return shop, user_id


def test_forged_tokens_are_401_at_the_gateway_and_at_users(
    platform: Platform, shop_for: Callable[[Platform], Shop], direct: httpx.Client
) -> None:
    shop, user_id = _customer(shop_for, platform)
    forger = Forger(platform, user_id)

    genuine = {"Authorization": f"Bearer {forger.genuine()}"}
    assert shop.http.get("/api/v1/users/me", headers=genuine).status_code == 200  # the control: a real token
    assert direct.get("/api/v1/users/me", headers=genuine).status_code == 200
    for attack, token in forger.attacks().items():
        headers = {"Authorization": f"Bearer {token}"}
        via_gateway = shop.http.get("/api/v1/users/me", headers=headers)
        at_users = direct.get("/api/v1/users/me", headers=headers)
        changed = direct.patch("/api/v1/users/me", json={"name": "Mallory"}, headers=headers)

        assert (via_gateway.status_code, at_users.status_code, changed.status_code) == (401, 401, 401), attack
        assert via_gateway.headers["content-type"] == "application/problem+json", attack
    assert shop.http.get("/api/v1/users/me", headers=shop.auth).json()["name"] == "Ada Buyer"


def test_one_customer_cannot_read_or_change_anothers_profile_or_addresses(
    platform: Platform, shop_for: Callable[[Platform], Shop], direct: httpx.Client
) -> None:
    ada, _ = _customer(shop_for, platform)
    bea, bea_id = _customer(shop_for, platform)
    created = bea.http.post("/api/v1/users/me/addresses", json=ADDRESS, headers=bea.auth)
    assert created.status_code == 201, created.text
    address = created.json()
    url = f"/api/v1/users/me/addresses/{address['id']}"

    attempts = [
        ada.http.get(url, headers=ada.auth),
        ada.http.patch(url, json={"city": "Hijacked"}, headers=ada.auth),
        ada.http.delete(url, headers=ada.auth),
        ada.http.get(f"/api/v1/users/{bea_id}", headers=ada.auth),
        ada.http.get(f"/internal/v1/users/{bea_id}", headers=ada.auth),
    ]
    as_bea = ada.http.patch("/api/v1/users/me", json={"id": bea_id, "name": "Mallory"}, headers=ada.auth)
    admin = ada.http.get(f"/api/v1/admin/users/{bea_id}", headers=ada.auth)

    assert [a.status_code for a in attempts] == [404] * 5
    assert as_bea.status_code == 422
    assert admin.status_code == 403
    assert bea.http.get(url, headers=bea.auth).json() == address
    assert bea.http.get("/api/v1/users/me", headers=bea.auth).json()["name"] == "Ada Buyer"
    assert ada.http.get("/api/v1/users/me/addresses", headers=ada.auth).json() == {"items": []}


@pytest.fixture(scope="module")
def quick_delays(platform: Platform) -> Platform:
    """Users restarted with 10 ms sign-in delays (1 s by default), so ten paced failures take a second, not
    two minutes. The lockout itself keeps its default of 15 minutes."""
    platform.config.extra_env["USERS_LOGIN_DELAY_SECONDS"] = "0.01"
    platform.restart("users")
    return platform


def _fail_until_locked(shop: Shop, email: str) -> list[int]:
    """Wrong passwords until ten were checked, waiting out each (short) delay; the statuses seen."""
    statuses: list[int] = []
    while statuses.count(401) < 10:
        response = shop.http.post("/api/v1/auth/token", json={"email": email, "password": "not-the-password"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["type"] == "/problems/sign-in-throttled", response.text
            time.sleep(0.03)
        assert len(statuses) < 200, statuses
    return statuses


def test_ten_failures_lock_that_account_only(
    quick_delays: Platform, shop_for: Callable[[Platform], Shop], direct: httpx.Client
) -> None:
    victim, victim_id = _customer(shop_for, quick_delays)
    bystander, _ = _customer(shop_for, quick_delays)
    stranger = shop_for(quick_delays)  # no account

    assert _fail_until_locked(victim, victim.email)[:3] == [401, 401, 401]
    locked = victim.http.post("/api/v1/auth/token", json={"email": victim.email, "password": victim.password})
    _fail_until_locked(stranger, stranger.email)
    unknown = stranger.http.post("/api/v1/auth/token", json={"email": stranger.email, "password": victim.password})

    assert locked.status_code == 429
    assert locked.json()["type"] == "/problems/account-locked"
    assert 890 <= int(locked.headers["retry-after"]) <= 900
    assert (unknown.status_code, unknown.json()["type"]) == (429, "/problems/account-locked")  # no enumeration
    bystander.sign_in()  # another account signs in as usual
    assert direct.get(f"/internal/v1/users/{victim_id}").json()["can_order"] is True  # locked, not disabled

    root = _admin(quick_delays, shop_for)
    unlocked = root.http.post(f"/api/v1/admin/users/{victim_id}/unlock", headers=root.auth)
    assert unlocked.status_code == 200, unlocked.text
    victim.sign_in()  # an admin lifted the lockout


def _admin(platform: Platform, shop_for: Callable[[Platform], Shop]) -> Shop:
    """An admin made the documented way, `microshop admin create`, on the platform's own state folder."""
    root = shop_for(platform)
    created = subprocess.run(
        [sys.executable, "-m", "microshop_launcher.cli", "admin", "create", "--email", root.email, "--name", "Root"],
        input=f"{root.password}\n{root.password}\n",
        env={**os.environ, "MICROSHOP_ROOT": str(platform.root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert root.email in created.stdout
    root.sign_in()
    return root
