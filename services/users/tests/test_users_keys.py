"""Signing keys: created owner-only in data_dir/keys, kept across restarts, from a PEM setting, rotated."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from microshop_kit.errors import ConfigError
from microshop_users.tokens import KeyRing, thumbprint, write_new_key

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from conftest import UsersApp

    StartUsers = Callable[..., AbstractAsyncContextManager[UsersApp]]


def _pem(key: Ed25519PrivateKey) -> str:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()


async def _kids(users: UsersApp) -> list[str]:
    return [key["kid"] for key in (await users.client.get("/.well-known/jwks.json")).json()["keys"]]


async def test_first_start_creates_an_owner_only_key_that_later_starts_reuse(
    tmp_path: Path, start_users: StartUsers
) -> None:
    async with start_users(tmp_path) as users:
        first = await _kids(users)
    files = list((tmp_path / "keys").glob("users-signing-*.pem"))

    assert [f.name for f in files] == [f"users-signing-{first[0]}.pem"]
    if os.name == "posix":
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    async with start_users(tmp_path) as users:
        assert await _kids(users) == first


async def test_a_key_from_the_setting_signs_and_no_file_is_written(tmp_path: Path, start_users: StartUsers) -> None:
    key = Ed25519PrivateKey.generate()

    async with start_users(tmp_path, signing_key_pem=_pem(key)) as users:
        await users.register()
        tokens = await users.sign_in()
        me = await users.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        kids = await _kids(users)

    assert me.status_code == 200
    assert kids == [thumbprint(key.public_key())]
    claims = jwt.decode(
        tokens["access_token"], key.public_key(), algorithms=["EdDSA"], audience="microshop", issuer="microshop-users"
    )
    assert claims["email"] == "ada@example.com"
    assert not (tmp_path / "keys").exists()


def test_a_pem_on_one_line_with_escaped_newlines_is_accepted() -> None:
    key = Ed25519PrivateKey.generate()

    ring = KeyRing.from_pem(_pem(key).replace("\n", "\\n"))

    assert ring.signing_key().kid == thumbprint(key.public_key())


def test_a_non_ed25519_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        KeyRing.from_pem(pem.decode())


def _age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


async def _signing_kid(users: UsersApp) -> str:
    """The kid a fresh token is signed with, after checking its signature against the published JWKS."""
    token = (await users.sign_in())["access_token"]
    kid: str = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [key for key in (await users.client.get("/.well-known/jwks.json")).json()["keys"] if key["kid"] == kid]
    jwt.decode(token, jwt.PyJWK(jwk), algorithms=["EdDSA"], audience="microshop", issuer="microshop-users")
    return kid


async def test_an_added_key_is_published_at_once_and_signs_once_verifiers_can_have_fetched_it(
    tmp_path: Path, start_users: StartUsers
) -> None:
    async with start_users(tmp_path) as users:
        await users.register()
        old_kid = await _signing_kid(users)
        (old_file,) = (tmp_path / "keys").glob("*.pem")
        _age(old_file, 3600)

        added = write_new_key(tmp_path / "keys")  # rotation: an operator drops in a new key file
        new_kid = added.name.removeprefix("users-signing-").removesuffix(".pem")
        assert sorted(await _kids(users)) == sorted([old_kid, new_kid])
        assert await _signing_kid(users) == old_kid  # published for less than the JWKS max-age: not yet

        _age(added, 301)
        users.app.state.sessions.keys.reload()  # instead of waiting for the periodic rescan
        assert await _signing_kid(users) == new_kid


def test_unreadable_key_files_are_skipped_and_an_empty_ring_is_refused(tmp_path: Path) -> None:
    (tmp_path / "users-signing-broken.pem").write_text("not a key")

    with pytest.raises(ConfigError, match="No usable signing key"):
        KeyRing.from_folder(tmp_path)
