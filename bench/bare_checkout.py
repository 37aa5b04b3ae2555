"""The floor of a checkout on this architecture, for bench/checkout.py: the same five processes a checkout crosses
(a gateway, orders, users, products, payments) as plain ASGI apps on the shop's servers (granian for the gateway,
uvicorn for the others) with plain ``sqlite3`` on the loop, and the same calls between services per checkout (a
price lookup for the cart; for the order the price again, the user, reserve, charge, commit), with none of the
shop's other work: no framework, validation, tokens, idempotency keys, saga leases or timeline, outbox, events,
email, metrics or logs. Whatever the shop costs above it is its own; what this costs is this machine's price for
the hops.

It answers the few paths bench/checkout.py's customers use (sign up, sign in, add a card, put the cart, place the
order), so the very same load runs against both. One module, a role per process (``BARE_ROLE``); run by
bench/checkout.py: ``python bare_checkout.py --port P [--server granian|uvicorn]`` per role, with ``BARE_DB`` (the
role's SQLite file) and the URLs of the services the role calls.

With ``BARE_NATS_URL`` set (bench/checkout.py's second floor) the checkout also does the one thing after it that
issue 5 asks of every order, at its floor: payments and orders write ``payment.captured`` and ``order.confirmed``
in the transaction that charges or confirms (a transactional outbox), a relay publishes each to JetStream (the
launcher's embedded server, ``sync_interval: always``) with its id as ``Nats-Msg-Id`` and deletes it once
acknowledged; a sixth role, notifications, pulls ``order.confirmed``, records it (inbox row and message in one
transaction), sends the confirmation email over one kept SMTP connection (``BARE_SMTP_PORT``, the launcher's mail
sink) and marks it sent before acknowledging the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import aiosmtplib
import nats
from nats.js import JetStreamContext

from microshop_kit.wire import InstancePool

ROLE = os.environ.get("BARE_ROLE", "")
#: Set: the orders and payments roles publish their events and the notifications role sends the email.
NATS_URL = os.environ.get("BARE_NATS_URL")
STREAM, CONFIRMED = "BARE", "bare.order.confirmed"
_OUTBOX = "CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, subject TEXT, payload TEXT)"
_LIMIT = 1 << 20
_JSON = [(b"content-type", b"application/json")]

SCHEMAS = {
    "users": "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT, name TEXT)",
    "products": """
        CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, price INTEGER, on_hand INTEGER, reserved INTEGER,
                                          sold INTEGER);
        CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY, sku TEXT, quantity INTEGER, state TEXT)""",
    "payments": """
        CREATE TABLE IF NOT EXISTS methods (id TEXT PRIMARY KEY, user_id TEXT, last4 TEXT);
        CREATE TABLE IF NOT EXISTS payments (order_id TEXT PRIMARY KEY, amount INTEGER, status TEXT);
        """
    + _OUTBOX,
    "orders": """
        CREATE TABLE IF NOT EXISTS cart (user_id TEXT, sku TEXT, quantity INTEGER, PRIMARY KEY (user_id, sku));
        CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, user_id TEXT, total INTEGER, step TEXT, email TEXT);
        """
    + _OUTBOX,
    "notifications": """
        CREATE TABLE IF NOT EXISTS inbox (event_id TEXT PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, event_id TEXT, recipient TEXT, status TEXT)""",
}
#: What the bare products service sells, at one price, enough of each that no reservation is refused.
SKUS = ("COF-003", "COF-001", "TEA-006", "KIT-001")


class Store:
    """One SQLite file in WAL mode, statements on the loop, one write transaction at a time (the loop is single
    threaded and no statement awaits, so a transaction is never interleaved)."""

    def __init__(self, path: str, schema: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.executescript(schema)

    def one(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return row

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back when it raises."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def write(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Run the statements in one transaction."""
        with self.transaction() as conn:
            for sql, params in statements:
                conn.execute(sql, params)


async def jetstream() -> JetStreamContext:
    """A connection to the broker and its stream (file storage, as the shop's), created by whoever comes first."""
    assert NATS_URL is not None
    js = (await nats.connect(NATS_URL)).jetstream()
    await js.add_stream(name=STREAM, subjects=["bare.>"])
    return js


class Outbox:
    """Events written in the business transaction, published to JetStream by one relay task, deleted once the
    broker has acknowledged them (stored and synced to disk)."""

    def __init__(self, db: Store) -> None:
        self.db = db
        self.wake = asyncio.Event()
        self.js: JetStreamContext | None = None

    async def start(self) -> None:
        self.js = await jetstream()
        asyncio.get_running_loop().create_task(self.relay())

    def add(self, conn: sqlite3.Connection, subject: str, data: dict[str, Any]) -> None:
        """In the caller's transaction; the caller sets ``wake`` once it has committed."""
        event = str(uuid.uuid4())
        conn.execute("INSERT INTO outbox VALUES (?, ?, ?)", (event, subject, json.dumps({"id": event, **data})))

    async def relay(self) -> None:
        assert self.js is not None
        while True:
            await self.wake.wait()
            self.wake.clear()
            rows = self.db.conn.execute("SELECT id, subject, payload FROM outbox ORDER BY rowid").fetchall()
            for event, subject, payload in rows:
                await self.js.publish(subject, payload.encode(), headers={"Nats-Msg-Id": event})
            if rows:
                self.db.write(*[("DELETE FROM outbox WHERE id = ?", (row[0],)) for row in rows])


class Answer(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body


def _user(headers: dict[bytes, bytes]) -> str:
    return headers.get(b"authorization", b"").decode().removeprefix("Bearer ")


async def call(pool: InstancePool, method: bytes, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else b""
    answer = await pool.request(method, path.encode(), _JSON if data else [], data, limit=_LIMIT)
    if answer.status >= 300:
        raise Answer(502, {"detail": f"{path}: HTTP {answer.status}"})
    return json.loads(answer.body)


class Users:
    def __init__(self, db: Store) -> None:
        self.db = db

    async def handle(self, method: str, path: str, headers: dict[bytes, bytes], body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/api/v1/users":
            user_id = str(uuid.uuid4())
            self.db.write(("INSERT INTO users VALUES (?, ?, ?)", (user_id, body["email"], body["name"])))
            return 201, {"id": user_id}
        if method == "POST" and path == "/api/v1/auth/token":
            row = self.db.one("SELECT id FROM users WHERE email = ?", body["email"])
            if row is None:
                return 401, {"detail": "unknown"}
            return 200, {"access_token": row[0]}  # the floor has no tokens: the user id stands in for one
        if method == "GET" and path.startswith("/internal/users/"):
            row = self.db.one("SELECT id, email, name FROM users WHERE id = ?", path.rsplit("/", 1)[1])
            if row is None:
                return 404, {"detail": "no such user"}
            return 200, {"id": row[0], "email": row[1], "name": row[2], "can_order": True}
        return 404, {"detail": "not found"}


class Products:
    def __init__(self, db: Store) -> None:
        self.db = db
        for sku in SKUS:
            db.write(("INSERT OR IGNORE INTO stock VALUES (?, 1000, 10000000, 0, 0)", (sku,)))

    async def handle(self, method: str, path: str, headers: dict[bytes, bytes], body: Any) -> tuple[int, Any]:
        if method == "GET" and path.startswith("/internal/prices/"):
            row = self.db.one("SELECT price FROM stock WHERE sku = ?", path.rsplit("/", 1)[1])
            return (200, {"price": row[0]}) if row else (404, {"detail": "no such product"})
        if method == "POST" and path == "/internal/reservations":
            order, sku, quantity = body["order_id"], body["sku"], body["quantity"]
            with self.db.transaction() as conn:
                held = conn.execute(
                    "UPDATE stock SET on_hand = on_hand - ?, reserved = reserved + ? WHERE sku = ? AND on_hand >= ?",
                    (quantity, quantity, sku, quantity),
                ).rowcount
                if not held:
                    raise Answer(409, {"detail": "out of stock"})  # rolls the transaction back
                conn.execute("INSERT INTO reservations VALUES (?, ?, ?, 'held')", (order, sku, quantity))
            return 201, {"order_id": order}
        if method == "POST" and path.startswith("/internal/reservations/"):
            order = path.split("/")[3]
            row = self.db.one("SELECT sku, quantity FROM reservations WHERE order_id = ?", order)
            if row is None:
                return 404, {"detail": "no such reservation"}
            self.db.write(
                ("UPDATE reservations SET state = 'committed' WHERE order_id = ?", (order,)),
                ("UPDATE stock SET reserved = reserved - ?, sold = sold + ? WHERE sku = ?", (row[1], row[1], row[0])),
            )
            return 200, {"order_id": order}
        return 404, {"detail": "not found"}


class Payments:
    def __init__(self, db: Store) -> None:
        self.db = db
        self.outbox = Outbox(db) if NATS_URL else None

    async def start(self) -> None:
        if self.outbox is not None:
            await self.outbox.start()

    async def handle(self, method: str, path: str, headers: dict[bytes, bytes], body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/api/v1/payment-methods":
            method_id = str(uuid.uuid4())
            self.db.write(("INSERT INTO methods VALUES (?, ?, ?)", (method_id, _user(headers), "4242")))
            return 201, {"id": method_id}
        if method == "POST" and path == "/internal/payments":
            order, amount = body["order_id"], body["amount"]
            with self.db.transaction() as conn:
                new = conn.execute("INSERT OR IGNORE INTO payments VALUES (?, ?, 'captured')", (order, amount)).rowcount
                if new and self.outbox is not None:
                    self.outbox.add(conn, "bare.payment.captured", {"order_id": order, "amount": amount})
            if self.outbox is not None:
                self.outbox.wake.set()
            return 201, {"order_id": order, "status": "captured"}
        return 404, {"detail": "not found"}


class Orders:
    def __init__(self, db: Store) -> None:
        self.db = db
        self.users = InstancePool(os.environ["BARE_USERS_URL"])
        self.products = InstancePool(os.environ["BARE_PRODUCTS_URL"])
        self.payments = InstancePool(os.environ["BARE_PAYMENTS_URL"])
        self.outbox = Outbox(db) if NATS_URL else None

    async def start(self) -> None:
        if self.outbox is not None:
            await self.outbox.start()

    async def handle(self, method: str, path: str, headers: dict[bytes, bytes], body: Any) -> tuple[int, Any]:
        user = _user(headers)
        if method == "PUT" and path == "/api/v1/cart":
            lines = [(user, line["sku"], line["quantity"]) for line in body["lines"]]
            for line in body["lines"]:  # as the shop does: the cart shows current prices
                await call(self.products, b"GET", f"/internal/prices/{line['sku']}")
            self.db.write(
                ("DELETE FROM cart WHERE user_id = ?", (user,)),
                *[("INSERT INTO cart VALUES (?, ?, ?)", line) for line in lines],
            )
            return 200, {"lines": body["lines"]}
        if method == "POST" and path == "/api/v1/orders":
            return await self.place(user)
        return 404, {"detail": "not found"}

    async def place(self, user: str) -> tuple[int, Any]:
        line = self.db.one("SELECT sku, quantity FROM cart WHERE user_id = ?", user)
        if line is None:
            return 422, {"detail": "the cart is empty"}
        sku, quantity = line
        price = (await call(self.products, b"GET", f"/internal/prices/{sku}"))["price"]
        order = str(uuid.uuid4())
        self.db.write(("INSERT INTO orders VALUES (?, ?, ?, 'started', NULL)", (order, user, price * quantity)))
        found = await call(self.users, b"GET", f"/internal/users/{user}")
        self.db.write(("UPDATE orders SET step = 'user_validated', email = ? WHERE id = ?", (found["email"], order)))
        await call(
            self.products, b"POST", "/internal/reservations", {"order_id": order, "sku": sku, "quantity": quantity}
        )
        self.db.write(("UPDATE orders SET step = 'reserved' WHERE id = ?", (order,)))
        await call(self.payments, b"POST", "/internal/payments", {"order_id": order, "amount": price * quantity})
        self.db.write(("UPDATE orders SET step = 'charged' WHERE id = ?", (order,)))
        await call(self.products, b"POST", f"/internal/reservations/{order}/commit")
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM cart WHERE user_id = ?", (user,))
            conn.execute("UPDATE orders SET step = 'confirmed' WHERE id = ?", (order,))
            if self.outbox is not None:
                confirmed = {"order_id": order, "email": found["email"], "name": found["name"], "sku": sku}
                self.outbox.add(conn, CONFIRMED, {**confirmed, "quantity": quantity, "total": price * quantity})
        if self.outbox is not None:
            self.outbox.wake.set()
        return 201, {"id": order, "status": "CONFIRMED", "total": price * quantity}


class Notifications:
    """Sends each order's confirmation email: pulled from JetStream, recorded with its inbox row in one
    transaction, sent over a kept SMTP connection, marked sent, then acknowledged."""

    def __init__(self, db: Store) -> None:
        self.db = db
        self.smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=int(os.environ["BARE_SMTP_PORT"]))

    async def start(self) -> None:
        js = await jetstream()
        subscription = await js.pull_subscribe(CONFIRMED, durable="notifications")
        await self.smtp.connect()
        asyncio.get_running_loop().create_task(self.run(subscription))

    async def run(self, subscription: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                messages = await subscription.fetch(16, timeout=1.0)
            except TimeoutError:
                continue
            for message in messages:
                event = json.loads(message.data)
                with self.db.transaction() as conn:
                    new = conn.execute("INSERT OR IGNORE INTO inbox VALUES (?)", (event["id"],)).rowcount
                    if new:
                        conn.execute(
                            "INSERT INTO messages VALUES (?, ?, ?, 'pending')",
                            (message_id := str(uuid.uuid4()), event["id"], event["email"]),
                        )
                if new:
                    await self.smtp.sendmail("shop@example.com", [event["email"]], _email(event, message_id))
                    self.db.write(("UPDATE messages SET status = 'sent' WHERE id = ?", (message_id,)))
                await message.ack()

    async def handle(self, method: str, path: str, headers: dict[bytes, bytes], body: Any) -> tuple[int, Any]:
        return 404, {"detail": "not found"}


def _email(event: dict[str, Any], message_id: str) -> bytes:
    text = (
        f"Hello {event['name']},\r\n\r\nYour order {event['order_id']} is confirmed:\r\n"
        f"{event['quantity']} x {event['sku']}, {event['total'] / 100:.2f} in all.\r\n"
    )
    return (
        f"From: shop@example.com\r\nTo: {event['email']}\r\nSubject: Your order is confirmed\r\n"
        f"Message-ID: <{message_id}@bare>\r\nX-Microshop-Event-Id: {event['id']}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}"
    ).encode()


class Gateway:
    """Passes each request to the service that owns its path, as the real gateway does (by prefix)."""

    def __init__(self) -> None:
        self.routes = [
            ("/api/v1/users", InstancePool(os.environ["BARE_USERS_URL"])),
            ("/api/v1/auth", InstancePool(os.environ["BARE_USERS_URL"])),
            ("/api/v1/payment-methods", InstancePool(os.environ["BARE_PAYMENTS_URL"])),
            ("/api/v1/", InstancePool(os.environ["BARE_ORDERS_URL"])),
        ]

    async def forward(self, scope: dict[str, Any], body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path: str = scope["path"]
        pool = next(pool for prefix, pool in self.routes if path.startswith(prefix))
        names = (b"authorization", b"content-type")
        headers = [(name, value) for name, value in scope["headers"] if name in names]
        answer = await pool.request(scope["method"].encode(), scope["raw_path"], headers, body, limit=_LIMIT)
        return answer.status, [(b"content-type", b"application/json")], answer.body


_service: Any = None


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _start() -> Any:
    if ROLE == "gateway":
        return Gateway()
    store = Store(os.environ["BARE_DB"], SCHEMAS[ROLE])
    roles = {
        "users": Users,
        "products": Products,
        "payments": Payments,
        "orders": Orders,
        "notifications": Notifications,
    }
    service = roles[ROLE](store)
    if hasattr(service, "start"):
        await service.start()
    return service


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _service
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _service = await _start()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    method = scope["method"]
    raw = await _body(receive) if method in ("POST", "PUT") else b""
    if scope["path"] == "/livez":
        status, headers, data = 200, [(b"content-type", b"application/json")], b'{"status":"ok"}'
    elif isinstance(_service, Gateway):
        status, headers, data = await _service.forward(scope, raw)
    else:
        try:
            status, answer = await _service.handle(
                method, scope["path"], dict(scope["headers"]), json.loads(raw or b"null")
            )
        except Answer as exc:
            status, answer = exc.status, exc.body
        headers, data = [(b"content-type", b"application/json")], json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    """Serve one role as the shop serves its processes: embedded in a uvloop loop, one process, on uvicorn (the
    services) or granian (the gateway)."""
    import argparse
    import gc

    import uvloop
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    parser = argparse.ArgumentParser(description="serve one role of the bare checkout")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=("granian", "uvicorn"), default="uvicorn")
    args = parser.parse_args()
    gc.freeze()
    if args.server == "uvicorn":
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=args.port, http="httptools", log_level="warning")
        uvloop.run(uvicorn.Server(config).serve())
        return
    server = Server(app, address="127.0.0.1", port=args.port, interface=Interfaces.ASGI, log_level=LogLevels.warning)
    uvloop.run(server.serve())


if __name__ == "__main__":
    main()
