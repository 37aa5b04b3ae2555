"""Signing keys (Ed25519, published as JWKS) and the access tokens (EdDSA JWTs) signed with them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from microshop_kit.errors import ConfigError
from microshop_kit.log import get_logger
from microshop_users.domain import User

log = get_logger("microshop.users.keys")

ALGORITHM = "EdDSA"
KEY_FILE_PREFIX = "users-signing-"
#: Even when the folder's mtime did not change (coarse timestamps), look again this often.
RESCAN_SECONDS = 10.0
#: How long verifiers may cache the JWKS (its Cache-Control max-age). An added key signs only once it has
#: been published this long, so no verifier meets a token whose key it has not fetched yet.
JWKS_MAX_AGE = 300


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @classmethod
    def from_pem(cls, pem: bytes, origin: str) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"Signing key {origin} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"Signing key {origin} is a {type(key).__name__}, not an Ed25519 key")
        return cls(thumbprint(key.public_key()), key)

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update(kid=self.kid, alg=ALGORITHM, use="sig")
        return jwk


def thumbprint(public: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint: a kid derived from the key itself, so it can never name another key."""
    jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def write_new_key(folder: Path) -> Path:
    """Create a key file readable by its owner only; written aside and renamed, so never seen half-written."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    final = folder / f"{KEY_FILE_PREFIX}{thumbprint(key.public_key())}.pem"
    partial = folder / f".{final.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, final)
    return final


class KeyRing:
    """The keys the service signs with and publishes.

    From a PEM setting: that one key. From a folder: every ``users-signing-*.pem`` in it is published, and
    the newest file at least ``JWKS_MAX_AGE`` old signs (the newest of all when none is that old, as on a
    first start). So a key is rotated by adding a file: published at once, signing five minutes later; it is
    retired by deleting the file once the tokens it signed expired. The folder is re-read when it changes, so
    workers that start together and each create a key publish all of them and sign with the same one.
    """

    def __init__(self, keys: list[tuple[float, SigningKey]], folder: Path | None = None) -> None:
        if not keys:
            raise ConfigError("A key ring needs at least one signing key")
        self._keys = keys  # (file modification time, key), newest first
        self._folder = folder
        self._seen: tuple[int, float] = (self._folder_mtime(), time.monotonic())

    @classmethod
    def from_pem(cls, pem: str) -> KeyRing:
        if "\n" not in pem:
            pem = pem.replace("\\n", "\n")  # a PEM squeezed onto one line in an env file
        return cls([(0.0, SigningKey.from_pem(pem.encode(), "USERS_SIGNING_KEY_PEM"))])

    @classmethod
    def from_folder(cls, folder: Path) -> KeyRing:
        """Load the folder's keys, creating the first one when there is none."""
        if not _key_files(folder):
            log.info("no signing key yet: creating one", path=str(write_new_key(folder)))
        keys = _load_folder(folder)
        if not keys:
            raise ConfigError(f"No usable signing key in {folder} (files {KEY_FILE_PREFIX}*.pem)")
        return cls(keys, folder)

    def signing_key(self) -> SigningKey:
        self._reload_if_changed()
        published_long_enough = time.time() - JWKS_MAX_AGE
        for modified, key in self._keys:
            if modified <= published_long_enough:
                return key
        return self._keys[0][1]

    def jwks(self) -> dict[str, Any]:
        self._reload_if_changed()
        return {"keys": [key.public_jwk() for _, key in self._keys]}

    def _folder_mtime(self) -> int:
        try:
            return self._folder.stat().st_mtime_ns if self._folder is not None else 0
        except OSError:  # folder gone: keep the keys in memory (reload keeps them too)
            return -1

    def reload(self) -> None:
        """Read the folder again now (it is also re-read when it changes, and every RESCAN_SECONDS)."""
        if self._folder is None:
            return
        mtime = self._folder_mtime()
        keys = _load_folder(self._folder)
        if keys:  # a folder emptied by mistake must not stop sign-in: keep the keys loaded before
            self._keys = keys
        self._seen = (mtime, time.monotonic())

    def _reload_if_changed(self) -> None:
        if self._folder is None:
            return
        if self._folder_mtime() != self._seen[0] or time.monotonic() - self._seen[1] >= RESCAN_SECONDS:
            self.reload()


def _key_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{KEY_FILE_PREFIX}*.pem")) if folder.is_dir() else []


def _load_folder(folder: Path) -> list[tuple[float, SigningKey]]:
    """The folder's keys with their files' modification times, newest first (then by kid: a stable order)."""
    found: list[tuple[float, SigningKey]] = []
    for path in _key_files(folder):
        try:
            found.append((path.stat().st_mtime, SigningKey.from_pem(path.read_bytes(), str(path))))
        except (OSError, ConfigError) as exc:
            log.warning("signing key skipped", path=str(path), error=str(exc))
            continue
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("signing key readable by others; chmod 600 it", path=str(path))
    found.sort(key=lambda item: (item[0], item[1].kid), reverse=True)
    return found


def issue_access_token(key: SigningKey, user: User, *, issuer: str, audience: str, ttl: int, now: datetime) -> str:
    """An access token for ``user``: EdDSA JWT with the claims every service's verifier requires."""
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": user.id,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
        "jti": secrets.token_urlsafe(16),
        "roles": [str(role) for role in user.roles],
        "email": user.email,
    }
    return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
