"""Users domain rules: email normalisation, password policy, refresh-token states, password hashing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from microshop_users.domain import (
    InvalidEmail,
    RefreshState,
    RefreshToken,
    WeakPassword,
    check_password,
    new_refresh_secret,
    normalise_email,
    refresh_token_hash,
)
from microshop_users.passwords import PasswordHasher

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ada@Example.COM\n", "ada@example.com"),
        ("demo@microshop.local", "demo@microshop.local"),
        ("first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
    ],
)
def test_emails_are_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ada",
        "@example.com",
        "ada@",
        "ada@localhost",
        "a b@example.com",
        "ada@-x.com",
        ".a@x.com",
        "a..b@x.com",
        "ada@example..com",
        "x" * 250 + "@example.com",
    ],
)
def test_malformed_emails_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalise_email(raw)


@pytest.mark.parametrize("password", ["", "eleven-char", "PASSWORD1234", "qwerty123456", "abababababababab"])
def test_short_common_and_repetitive_passwords_are_refused(password: str) -> None:
    with pytest.raises(WeakPassword):
        check_password(password)


def test_a_long_uncommon_password_passes() -> None:
    check_password("microshop-demo-2026")
    check_password("twelve chars")


def _token(**changes: datetime | None) -> RefreshToken:
    fields = {"expires_at": NOW + timedelta(days=1), "used_at": None, "revoked_at": None, **changes}
    return RefreshToken(token_hash="h", family_id="f", user_id="u", **fields)  # type: ignore[arg-type]


def test_refresh_token_states() -> None:
    assert _token().state(NOW) is RefreshState.VALID
    assert _token(expires_at=NOW).state(NOW) is RefreshState.EXPIRED
    assert _token(used_at=NOW).state(NOW) is RefreshState.REUSED
    assert _token(used_at=NOW, revoked_at=NOW).state(NOW) is RefreshState.REVOKED


def test_refresh_secrets_are_random_and_stored_only_as_sha256() -> None:
    first, second = new_refresh_secret(), new_refresh_secret()

    assert first != second
    assert len(first) >= 43  # 32 random bytes, base64url
    assert refresh_token_hash(first) == refresh_token_hash(first)
    assert len(refresh_token_hash(first)) == 64
    assert first not in refresh_token_hash(first)


async def test_hasher_verifies_and_refuses() -> None:
    hasher = PasswordHasher(concurrency=2)
    stored = await hasher.hash("correct-horse-battery")

    assert await hasher.verify(stored, "correct-horse-battery")
    assert not await hasher.verify(stored, "wrong-horse-battery")
    assert not await hasher.verify(None, "correct-horse-battery")  # unknown account: always False
    assert not await hasher.verify("not-a-hash", "correct-horse-battery")
    assert not hasher.needs_rehash(stored)


async def test_hasher_flags_weaker_hashes_for_rehash() -> None:
    import argon2

    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("correct-horse-battery")

    hasher = PasswordHasher()
    assert await hasher.verify(weak, "correct-horse-battery")
    assert hasher.needs_rehash(weak)


def test_hasher_refuses_memory_below_owasp_floor() -> None:
    with pytest.raises(ValueError, match="19456"):
        PasswordHasher(memory_cost=8192)
