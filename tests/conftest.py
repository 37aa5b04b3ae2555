"""Fixtures for cross-service tests: the real platform processes, and a client that shops through the gateway."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from microshop_kit.testing import require_server
from microshop_launcher import Platform, PlatformConfig

POSTGRES_SERVER = os.environ.get("MICROSHOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
NATS_URL = os.environ.get("MICROSHOP_TEST_NATS", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("MICROSHOP_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")

GOOD_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"
INSUFFICIENT_FUNDS_CARD = "4000 0000 0000 9995"
EXPIRED_CARD = "4000 0000 0000 0069"
INCORRECT_CVC_CARD = "4000 0000 0000 0127"
PROCESSING_ERROR_CARD = "4000 0000 0000 0119"
THREE_D_SECURE_CARD = "4000 0027 6000 3184"
#: Orders that some runner must still drive; none may be left once the invariants are checked.
UNFINISHED = ("PENDING", "AWAITING_PAYMENT")


class Shop:
    """A customer of the shop, speaking only to the gateway as a real client would."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.http = httpx.Client(base_url=platform.gateway_url, timeout=30)
        self.email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
        self.password = "correct horse battery staple"
        self.token: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        assert self.token, "sign in first"
        return {"Authorization": f"Bearer {self.token}"}

    def sign_up(self, name: str = "Ada Buyer") -> dict[str, Any]:
        response = self.http.post("/api/v1/users", json={"email": self.email, "password": self.password, "name": name})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def sign_in(self) -> None:
        response = self.http.post("/api/v1/auth/token", json={"email": self.email, "password": self.password})
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]

    def products(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/products", params=params)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def availability(self, *skus: str) -> dict[str, int]:
        response = self.http.get("/api/v1/availability", params=[("sku", sku) for sku in skus])
        assert response.status_code == 200, response.text
        result: dict[str, int] = response.json()["availability"]
        return result

    def fill_cart(self, lines: list[tuple[str, int]]) -> dict[str, Any]:
        body = {"lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines]}
        response = self.http.put("/api/v1/cart", json=body, headers=self.auth)
        assert response.status_code == 200, response.text
        cart: dict[str, Any] = response.json()
        return cart

    def card(self, number: str = GOOD_CARD) -> str:
        body = {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
        response = self.http.post("/api/v1/payment-methods", json=body, headers=self.auth)
        assert response.status_code == 201, response.text
        method_id: str = response.json()["id"]
        return method_id

    def paypal(self) -> str:
        body = {"type": "paypal", "paypal": {"email": self.email}}
        response = self.http.post("/api/v1/payment-methods", json=body, headers=self.auth)
        assert response.status_code == 201, response.text
        method_id: str = response.json()["id"]
        return method_id

    def decide_payment(self, payment_id: str, decision: str) -> httpx.Response:
        """The customer's answer on the approve/deny page of a 3-D Secure or PayPal payment."""
        path = f"/api/v1/payments/{payment_id}/action"
        return self.http.post(path, json={"decision": decision}, headers=self.auth)

    def cancel_order(self, order_id: str) -> httpx.Response:
        return self.http.post(f"/api/v1/orders/{order_id}/cancel", headers=self.auth)

    def place_order(self, payment_method_id: str, key: str | None = None) -> httpx.Response:
        body = {
            "shipping_address": {
                "name": "Ada Buyer",
                "line1": "1 Analytical Way",
                "city": "London",
                "postal_code": "N1 9GU",
                "country": "GB",
            },
            "payment_method_id": payment_method_id,
        }
        headers = {**self.auth, "Idempotency-Key": key or str(uuid.uuid4())}
        return self.http.post("/api/v1/orders", json=body, headers=headers)

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/orders/{order_id}", headers=self.auth)
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        return order

    def wait_order(self, order_id: str, timeout: float = 60, until: tuple[str, ...] = ("PENDING",)) -> dict[str, Any]:
        """The order once its status is not one of ``until`` any more (or as it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            order = self.order(order_id)
            if order["status"] not in until or time.monotonic() > deadline:
                return order
            time.sleep(0.2)

    def mails_to(self, address: str | None = None) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.platform.mailbox_url}/messages", timeout=10)
        assert response.status_code == 200, response.text
        target = (address or self.email).lower()
        return [m for m in response.json() if target in str(m["to"]).lower()]

    def wait_mails(self, count: int, *, subject_has: str = "", timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until at least `count` mails to this customer whose subject contains `subject_has` arrived."""
        deadline = time.monotonic() + timeout
        while True:
            mails = [m for m in self.mails_to() if subject_has.lower() in m["subject"].lower()]
            if len(mails) >= count or time.monotonic() > deadline:
                return mails
            time.sleep(0.2)


@pytest.fixture
def shop_for() -> Iterator[Callable[[Platform], Shop]]:
    shops: list[Shop] = []

    def make(platform: Platform) -> Shop:
        shop = Shop(platform)
        shops.append(shop)
        return shop

    yield make
    for shop in shops:
        shop.http.close()


def _platform(
    tmp: Path, *, postgres: bool = False, broker_url: str | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[Platform]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    config = PlatformConfig.isolated(
        tmp,
        postgres_url=POSTGRES_SERVER if postgres else None,
        database_prefix=f"microshop_{namespace}",
        broker_url=broker_url,
        namespace=namespace,
        extra_env=dict(extra_env or {}),
    )
    platform = Platform(config)
    try:
        platform.start(timeout=90)
        seeded = platform.run_cli("products", "seed", check=False)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        yield platform
    finally:
        platform.stop()
        if postgres:
            platform.drop_databases()
        if broker_url:
            platform.purge_broker()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform on its embedded defaults: a SQLite file per service and an embedded nats-server."""
    yield from _platform(tmp_path_factory.mktemp("platform"))


def _server(url: str) -> tuple[str, int]:
    parsed = httpx.URL(
        url.replace("postgresql://", "http://").replace("nats://", "http://").replace("amqp://", "http://")
    )
    return parsed.host, parsed.port or 0


@pytest.fixture(scope="module", params=["postgres+nats", "postgres+rabbitmq"])
def infra_platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform on real infrastructure: PostgreSQL (a database per service) and the system NATS or RabbitMQ."""
    broker = NATS_URL if request.param.endswith("nats") else RABBITMQ_URL
    require_server(*_server(POSTGRES_SERVER), "PostgreSQL")
    require_server(*_server(broker), "NATS" if broker.startswith("nats") else "RabbitMQ")
    yield from _platform(tmp_path_factory.mktemp(request.param), postgres=True, broker_url=broker)


# ------------------------------------------------------------------------------------ the saga's invariants


def _captured(payment: Mapping[str, Any]) -> bool:
    """Money is held for this payment: captured and not (fully) refunded."""
    status = payment["status"]
    refunded = int(payment.get("amount_refunded") or 0)
    return status in ("succeeded", "captured") and refunded < int(payment["amount"])


async def saga_state(platform: Platform) -> dict[str, Any]:
    """Orders, payments, reservations and stock as each service's own database has them."""
    dbs = {name: await platform.open_database(name) for name in ("orders", "payments", "products")}
    try:
        orders = await dbs["orders"].fetch("SELECT id, user_id, status, total, saga_step FROM orders")
        payments = await dbs["payments"].fetch("SELECT * FROM payments")
        reservations = await dbs["products"].fetch("SELECT order_id, status FROM reservations")
        stock = await dbs["products"].fetch("SELECT sku, on_hand, reserved, sold, received FROM stock")
    finally:
        for db in dbs.values():
            await db.close()
    return {
        "orders": {row["id"]: dict(row) for row in orders},
        "payments": {row["order_id"]: dict(row) for row in payments},
        "reservations": {row["order_id"]: row["status"] for row in reservations},
        "stock": {row["sku"]: dict(row) for row in stock},
    }


def check_saga_invariants(platform: Platform, order_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """Every order final; a CONFIRMED order has one captured payment of its total and committed stock; a REJECTED
    or CANCELLED one holds no money and no stock; per SKU on hand + reserved + sold == received, none negative."""
    state = asyncio.run(saga_state(platform))
    wanted = set(order_ids) if order_ids is not None else set(state["orders"])
    for order_id in wanted:
        order = state["orders"][order_id]
        payment = state["payments"].get(order_id)
        reservation = state["reservations"].get(order_id)
        assert order["status"] not in UNFINISHED, f"order {order_id} left unfinished: {order}"
        if order["status"] in ("CONFIRMED", "SHIPPED", "DELIVERED"):
            assert payment is not None and _captured(payment), f"confirmed {order_id} without a capture: {payment}"
            assert int(payment["amount"]) == int(order["total"]), f"charged another amount: {payment} {order}"
            assert reservation == "committed", f"confirmed {order_id} with stock {reservation}"
        else:
            assert payment is None or not _captured(payment), f"{order['status']} {order_id} kept money: {payment}"
            assert reservation in (None, "released", "returned"), f"{order['status']} {order_id} holds {reservation}"
    for sku, row in state["stock"].items():
        assert row["on_hand"] + row["reserved"] + row["sold"] == row["received"], f"stock of {sku} leaked: {row}"
        assert min(row["on_hand"], row["reserved"], row["sold"]) >= 0, f"negative stock of {sku}: {row}"
    return state


@pytest.fixture(scope="module", params=["sqlite+nats", "postgres+nats", "postgres+rabbitmq"])
def any_platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform on its embedded defaults, and on PostgreSQL with the system NATS and with RabbitMQ."""
    yield from _platform_for(request.param, tmp_path_factory.mktemp(request.param))


def _platform_for(kind: str, tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[Platform]:
    if kind == "sqlite+nats":
        yield from _platform(tmp, extra_env=extra_env)
        return
    broker = NATS_URL if kind.endswith("nats") else RABBITMQ_URL
    require_server(*_server(POSTGRES_SERVER), "PostgreSQL")
    require_server(*_server(broker), "NATS" if broker.startswith("nats") else "RabbitMQ")
    yield from _platform(tmp, postgres=True, broker_url=broker, extra_env=extra_env)
