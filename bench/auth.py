"""Sign-in latency and access-token verification throughput, each against its floor measured in the same run.

- Sign-in: N `POST /api/v1/auth/token` to the users app in-process (httpx ASGITransport, SQLite), one at a
  time, then 8 at a time. Baselines: one bare argon2id verification with the same parameters, which is
  what a sign-in cannot avoid (the difference is the service's own cost: throttle rows, lookup, refresh
  token, JWT signing, HTTP), and bare verifications/s in as many threads as the service hashes at once
  (the ceiling for sign-ins/s on this machine).
- Verification: tokens/s through `microshop_kit.auth.JwksVerifier.verify` with a warm key cache (what every
  service and the gateway run per request), each token new to it; then the cost when the same tokens come
  again (kept verified tokens). Baseline: `jwt.decode` with the key preloaded and the same checks, i.e.
  PyJWT's Ed25519 verification alone.

Run: .venv/bin/python bench/auth.py [--sign-ins 200] [--tokens 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import argon2
import jwt

from microshop_kit.auth import REQUIRED_CLAIMS, JwksVerifier
from microshop_kit.http import HttpPool
from microshop_kit.testing import JwtIssuer, jwks_server, running_app
from microshop_users import UsersSettings, create_app
from microshop_users.passwords import MIN_MEMORY_COST_KIB, PARALLELISM, TIME_COST

PASSWORD = "correct-horse-battery"  # noqa: S105 - the benchmark account's password


def _quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000, 2),
        "n": len(ordered),
    }


async def _timed(call: Callable[[], Awaitable[None]], count: int, concurrency: int) -> tuple[list[float], float]:
    """Latency of each call and the wall time of all, with ``concurrency`` callers."""
    latencies: list[float] = []
    remaining = iter(range(count))

    async def caller() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def _argon2() -> tuple[argon2.PasswordHasher, str]:
    hasher = argon2.PasswordHasher(
        time_cost=TIME_COST, memory_cost=MIN_MEMORY_COST_KIB, parallelism=PARALLELISM, type=argon2.Type.ID
    )
    return hasher, hasher.hash(PASSWORD)


def bare_argon2(count: int) -> list[float]:
    hasher, stored = _argon2()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        hasher.verify(stored, PASSWORD)
        samples.append(time.perf_counter() - started)
    return samples


def bare_argon2_per_s(count: int, threads: int) -> float:
    """Verifications per second in ``threads`` threads: the ceiling for sign-ins on this machine."""
    hasher, stored = _argon2()
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: hasher.verify(stored, PASSWORD), range(count)))
    return count / (time.perf_counter() - started)


async def sign_ins(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        settings = UsersSettings(data_dir=Path(folder), broker_url=None, log_level="WARNING")
        async with running_app(create_app(settings)) as client:
            body = {"email": "bench@example.com", "password": PASSWORD, "name": "Bench"}
            assert (await client.post("/api/v1/users", json=body)).status_code == 201

            async def sign_in() -> None:
                response = await client.post("/api/v1/auth/token", json={k: body[k] for k in ("email", "password")})
                assert response.status_code == 200, response.text

            await sign_in()  # warm-up
            one_by_one, _ = await _timed(sign_in, count, 1)
            parallel, wall = await _timed(sign_in, count, 8)
    return {
        "sequential": _quantiles(one_by_one),
        "8_concurrent": {**_quantiles(parallel), "sign_ins_per_s": round(count / wall, 1)},
    }


async def verifications(count: int) -> dict[str, Any]:
    issuer = JwtIssuer()
    tokens = [issuer.token(roles=["customer"], email="bench@example.com") for _ in range(count)]
    async with jwks_server(issuer) as url:
        pool = HttpPool()
        verifier = JwksVerifier(url, issuer.issuer, issuer.audience, pool)
        await verifier.refresh()  # warm cache: no fetch inside the loop
        started = time.perf_counter()
        for token in tokens:
            await verifier.verify(token)
        kit_seconds = time.perf_counter() - started
        # A client sends the same token with every request: the verifier keeps the verified ones.
        repeated = tokens[-1000:] * 5  # among the kept ones (the verifier keeps up to 4,096)
        started = time.perf_counter()
        for token in repeated:
            await verifier.verify(token)
        kept_seconds = time.perf_counter() - started
        await pool.close()
    key = jwt.PyJWK(issuer.jwks()["keys"][0], algorithm="EdDSA")
    started = time.perf_counter()
    for token in tokens:
        jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=issuer.audience,
            issuer=issuer.issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    bare_seconds = time.perf_counter() - started
    return {
        "jwks_verifier_tokens_per_s": round(count / kit_seconds),
        "baseline_jwt_decode_tokens_per_s": round(count / bare_seconds),
        "verifier_us_per_token": round(kit_seconds / count * 1e6, 1),
        "baseline_us_per_token": round(bare_seconds / count * 1e6, 1),
        "ratio_verifier_to_baseline": round(kit_seconds / bare_seconds, 2),
        "verifier_kept_token_us": round(kept_seconds / len(repeated) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sign-ins", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=5000)
    args = parser.parse_args()

    baseline = _quantiles(bare_argon2(args.sign_ins))
    ceiling = bare_argon2_per_s(args.sign_ins, threads=UsersSettings().password_hash_concurrency)
    measured = asyncio.run(sign_ins(args.sign_ins))
    result = {
        "cpus": os.cpu_count(),
        "sign_in_latency": {
            **measured,
            "baseline_bare_argon2id_verify": baseline,
            "baseline_bare_argon2id_verifications_per_s_in_hasher_threads": round(ceiling, 1),
            "service_overhead_p50_ms": round(measured["sequential"]["p50_ms"] - baseline["p50_ms"], 2),
            "argon2": {"m_kib": MIN_MEMORY_COST_KIB, "t": TIME_COST, "p": PARALLELISM},
        },
        "access_token_verification": asyncio.run(verifications(args.tokens)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
