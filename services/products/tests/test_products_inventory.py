"""Stock reservations over HTTP, on SQLite and on PostgreSQL: all-or-none, idempotent, expiring, concurrent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from microshop_kit.db import Database, Tx
from microshop_kit.errors import IntegrityError
from microshop_kit.testing import LeanCheck, compare_each_with_fastapi
from microshop_products.domain import Line
from microshop_products.store import InventoryStore
from microshop_products.testing import Service, ServiceFactory

CATALOG: dict[str, Any] = {
    "currency": "EUR",
    "categories": [{"slug": "coffee", "name": "Coffee", "parent": None}],
    "products": [
        {"sku": "BEANS", "category": "coffee", "name": "Beans", "price": 1200, "description": "Roasted", "stock": 10},
        {"sku": "MUG", "category": "coffee", "name": "Mug", "price": 900, "description": "Enamel", "stock": 3},
        {"sku": "GRINDER", "category": "coffee", "name": "Grinder", "price": 3500, "description": "Burr", "stock": 20},
    ],
}
RESERVE = "/internal/v1/reservations"


def order() -> str:
    return str(uuid.uuid4())


def reservation(order_id: str, **lines: int) -> dict[str, Any]:
    return {"order_id": order_id, "lines": [{"sku": sku, "quantity": q} for sku, q in lines.items()]}


@pytest.fixture
async def shop(make_service: ServiceFactory) -> AsyncIterator[Service]:
    async with make_service(CATALOG) as service:
        yield service


# ---------------------------------------------------------------------------------------------- reserve


async def test_reserve_moves_units_from_on_hand_to_reserved(shop: Service) -> None:
    order_id = order()
    response = await shop.client.post(RESERVE, json=reservation(order_id, BEANS=4, MUG=1))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["order_id"] == order_id
    assert body["status"] == "reserved"
    assert body["lines"] == [{"sku": "BEANS", "quantity": 4}, {"sku": "MUG", "quantity": 1}]
    assert body["expires_at"] > body["expires_at"][:4]  # an ISO timestamp
    assert await shop.stock("BEANS") == {"on_hand": 6, "reserved": 4, "sold": 0, "received": 10}
    assert await shop.stock("MUG") == {"on_hand": 2, "reserved": 1, "sold": 0, "received": 3}


async def test_reservation_is_all_or_none_when_a_later_line_is_short(shop: Service) -> None:
    # BEANS sorts before MUG, so its UPDATE has already run when MUG turns out short.
    response = await shop.client.post(RESERVE, json=reservation(order(), BEANS=2, MUG=4))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/out-of-stock"
    assert problem["skus"] == ["MUG"]
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}
    assert await shop.stock("MUG") == {"on_hand": 3, "reserved": 0, "sold": 0, "received": 3}


async def test_out_of_stock_names_every_short_sku_including_unknown_ones(shop: Service) -> None:
    response = await shop.client.post(RESERVE, json=reservation(order(), BEANS=11, MUG=1, NOPE=1))
    assert response.status_code == 409
    assert response.json()["skus"] == ["BEANS", "NOPE"]
    assert (await shop.stock("MUG"))["on_hand"] == 3


async def test_an_order_refused_for_stock_may_try_again_later(shop: Service) -> None:
    order_id = order()
    assert (await shop.client.post(RESERVE, json=reservation(order_id, MUG=5))).status_code == 409
    assert await shop.reservation_status(order_id) is None
    await shop.set_on_hand("MUG", 5)
    assert (await shop.client.post(RESERVE, json=reservation(order_id, MUG=5))).status_code == 201


async def test_same_reservation_twice_replays_the_answer_with_one_effect(shop: Service) -> None:
    body = reservation(order(), BEANS=3)
    first = await shop.client.post(RESERVE, json=body)
    second = await shop.client.post(RESERVE, json=body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == second.json()
    assert await shop.stock("BEANS") == {"on_hand": 7, "reserved": 3, "sold": 0, "received": 10}


async def test_same_order_id_with_other_lines_is_refused(shop: Service) -> None:
    order_id = order()
    assert (await shop.client.post(RESERVE, json=reservation(order_id, BEANS=3))).status_code == 201
    response = await shop.client.post(RESERVE, json=reservation(order_id, BEANS=4))
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/reservation-mismatch"
    assert (await shop.stock("BEANS"))["reserved"] == 3


async def test_concurrent_duplicates_of_one_reservation_take_stock_once(shop: Service) -> None:
    body = reservation(order(), GRINDER=2)
    responses = await asyncio.gather(*(shop.client.post(RESERVE, json=body) for _ in range(10)))
    assert {r.status_code for r in responses} == {201}
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    assert await shop.stock("GRINDER") == {"on_hand": 18, "reserved": 2, "sold": 0, "received": 20}


async def test_fifty_concurrent_buyers_of_twenty_units_exactly_twenty_win(shop: Service) -> None:
    bodies = [reservation(order(), GRINDER=1) for _ in range(50)]
    responses = await asyncio.gather(*(shop.client.post(RESERVE, json=body) for body in bodies))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 20
    assert statuses.count(409) == 30
    assert await shop.stock("GRINDER") == {"on_hand": 0, "reserved": 20, "sold": 0, "received": 20}


# ------------------------------------------------------------------------------------- commit and release


async def test_commit_twice_sells_once(shop: Service) -> None:
    order_id = order()
    await shop.client.post(RESERVE, json=reservation(order_id, BEANS=2, MUG=1))
    for _ in range(2):
        response = await shop.client.post(f"{RESERVE}/{order_id}/commit")
        assert response.status_code == 200
        assert response.json() == {"order_id": order_id, "status": "committed"}
    assert await shop.stock("BEANS") == {"on_hand": 8, "reserved": 0, "sold": 2, "received": 10}
    assert await shop.stock("MUG") == {"on_hand": 2, "reserved": 0, "sold": 1, "received": 3}


async def test_release_twice_puts_units_back_once(shop: Service) -> None:
    order_id = order()
    await shop.client.post(RESERVE, json=reservation(order_id, BEANS=5))
    for _ in range(2):
        response = await shop.client.post(f"{RESERVE}/{order_id}/release")
        assert response.status_code == 200
        assert response.json() == {"order_id": order_id, "status": "released"}
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}


async def test_release_before_reserve_refuses_the_late_reservation(shop: Service) -> None:
    order_id = order()
    released = await shop.client.post(f"{RESERVE}/{order_id}/release")
    assert released.status_code == 200
    assert released.json()["status"] == "released"
    late = await shop.client.post(RESERVE, json=reservation(order_id, BEANS=1))
    assert late.status_code == 409
    assert late.json()["type"] == "/problems/reservation-released"
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}


async def test_released_reservation_cannot_be_committed(shop: Service) -> None:
    order_id = order()
    await shop.client.post(RESERVE, json=reservation(order_id, BEANS=1))
    await shop.client.post(f"{RESERVE}/{order_id}/release")
    response = await shop.client.post(f"{RESERVE}/{order_id}/commit")
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/reservation-released"
    again = await shop.client.post(RESERVE, json=reservation(order_id, BEANS=1))
    assert again.json()["type"] == "/problems/reservation-released"


async def test_committed_reservation_cannot_be_released(shop: Service) -> None:
    order_id = order()
    await shop.client.post(RESERVE, json=reservation(order_id, BEANS=1))
    await shop.client.post(f"{RESERVE}/{order_id}/commit")
    response = await shop.client.post(f"{RESERVE}/{order_id}/release")
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/reservation-committed"
    assert await shop.stock("BEANS") == {"on_hand": 9, "reserved": 0, "sold": 1, "received": 10}


async def test_return_gives_sold_units_back_once(shop: Service) -> None:
    order_id = order()
    await shop.client.post(RESERVE, json=reservation(order_id, BEANS=2, MUG=1))
    await shop.client.post(f"{RESERVE}/{order_id}/commit")
    answers = await asyncio.gather(*(shop.client.post(f"{RESERVE}/{order_id}/return") for _ in range(3)))

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert all(answer.json() == {"order_id": order_id, "status": "returned"} for answer in answers)
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}
    assert await shop.stock("MUG") == {"on_hand": 3, "reserved": 0, "sold": 0, "received": 3}
    after = [await shop.client.post(f"{RESERVE}/{order_id}/{step}") for step in ("release", "commit")]
    again = await shop.client.post(RESERVE, json=reservation(order_id, BEANS=2, MUG=1))
    assert after[0].status_code == 409
    assert after[1].json()["status"] == "returned"
    assert again.json()["type"] == "/problems/reservation-released"
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}


async def test_only_a_committed_reservation_can_be_returned(shop: Service) -> None:
    held, unknown = order(), order()
    await shop.client.post(RESERVE, json=reservation(held, BEANS=1))
    not_sold = await shop.client.post(f"{RESERVE}/{held}/return")
    missing = await shop.client.post(f"{RESERVE}/{unknown}/return")

    assert not_sold.status_code == 409
    assert not_sold.json()["type"] == "/problems/reservation-not-committed"
    assert missing.status_code == 404
    assert await shop.stock("BEANS") == {"on_hand": 9, "reserved": 1, "sold": 0, "received": 10}


async def test_commit_of_an_unknown_order_is_not_found(shop: Service) -> None:
    response = await shop.client.post(f"{RESERVE}/{order()}/commit")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_replayed_reservation_after_commit_still_answers_the_first_time(shop: Service) -> None:
    body = reservation(order(), MUG=2)
    first = await shop.client.post(RESERVE, json=body)
    await shop.client.post(f"{RESERVE}/{body['order_id']}/commit")
    replay = await shop.client.post(RESERVE, json=body)
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert await shop.stock("MUG") == {"on_hand": 1, "reserved": 0, "sold": 2, "received": 3}


async def test_release_racing_its_reservation_always_ends_released(shop: Service) -> None:
    # The saga's compensation may overtake a retried reservation: whichever runs first, the order ends
    # released and every unit is back on hand.
    await shop.set_on_hand("GRINDER", 100)
    orders = [order() for _ in range(40)]
    responses = await asyncio.gather(
        *(shop.client.post(RESERVE, json=reservation(order_id, GRINDER=1)) for order_id in orders),
        *(shop.client.post(f"{RESERVE}/{order_id}/release") for order_id in orders),
    )
    reserved, released = responses[:40], responses[40:]
    assert {(r.status_code, r.json()["status"]) for r in released} == {(200, "released")}
    for response in reserved:
        assert response.status_code == 201 or response.json()["type"] == "/problems/reservation-released"
    assert {await shop.reservation_status(order_id) for order_id in orders} == {"released"}
    assert await shop.stock("GRINDER") == {"on_hand": 100, "reserved": 0, "sold": 0, "received": 100}


async def test_commit_racing_release_settles_each_order_once(shop: Service) -> None:
    orders = [order() for _ in range(10)]
    for order_id in orders:
        await shop.client.post(RESERVE, json=reservation(order_id, GRINDER=1))
    responses = await asyncio.gather(
        *(shop.client.post(f"{RESERVE}/{order_id}/{action}") for order_id in orders for action in ("commit", "release"))
    )
    for order_id, commit, release in zip(orders, responses[::2], responses[1::2], strict=True):
        status = await shop.reservation_status(order_id)
        winner, loser = (commit, release) if status == "committed" else (release, commit)
        assert winner.status_code == 200 and winner.json()["status"] == status
        assert loser.status_code == 409
    stock = await shop.stock("GRINDER")
    assert stock["reserved"] == 0 and stock["sold"] + stock["on_hand"] == 20


class GatedStore(InventoryStore):
    """Holds a reservation's transaction open, after its claim and stock changes, until the gate opens."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reached, self.gate = asyncio.Event(), asyncio.Event()

    async def add_lines(self, tx: Tx, order_id: str, lines: Sequence[Line]) -> None:
        self.reached.set()
        await self.gate.wait()
        await super().add_lines(tx, order_id, lines)


async def test_release_waits_for_a_reservation_in_flight_and_then_releases_it(shop: Service) -> None:
    gated = GatedStore(shop.db)
    shop.app.state.inventory.store = gated
    order_id = order()
    reserving = asyncio.create_task(shop.client.post(RESERVE, json=reservation(order_id, BEANS=2)))
    await gated.reached.wait()
    releasing = asyncio.create_task(shop.client.post(f"{RESERVE}/{order_id}/release"))
    await asyncio.sleep(0.2)  # the release now waits: on the reservation's key (PostgreSQL) or the write lock
    gated.gate.set()
    reserved, released = await reserving, await releasing
    assert reserved.status_code == 201
    assert (released.status_code, released.json()["status"]) == (200, "released")
    assert await shop.reservation_status(order_id) == "released"
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}


# ------------------------------------------------------------------------------------------------- expiry


async def test_sweeper_releases_an_expired_reservation(make_service: ServiceFactory) -> None:
    async with make_service(CATALOG, reservation_ttl_seconds=0.2, sweep_interval_seconds=0.05) as shop:
        order_id = order()
        assert (await shop.client.post(RESERVE, json=reservation(order_id, BEANS=4))).status_code == 201
        for _ in range(100):  # up to 5 s
            if await shop.reservation_status(order_id) == "released":
                break
            await asyncio.sleep(0.05)
        assert await shop.reservation_status(order_id) == "released"
        assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}
        late_commit = await shop.client.post(f"{RESERVE}/{order_id}/commit")
        assert late_commit.status_code == 409
        assert late_commit.json()["type"] == "/problems/reservation-released"


async def test_sweeper_leaves_live_and_committed_reservations_alone(make_service: ServiceFactory) -> None:
    async with make_service(CATALOG, reservation_ttl_seconds=0.3, sweep_interval_seconds=0.05) as shop:
        committed = order()
        await shop.client.post(RESERVE, json=reservation(committed, MUG=1))
        await shop.client.post(f"{RESERVE}/{committed}/commit")
        await asyncio.sleep(0.6)
        assert await shop.reservation_status(committed) == "committed"
    async with make_service(CATALOG, reservation_ttl_seconds=60, sweep_interval_seconds=0.05) as shop:
        live = order()
        await shop.client.post(RESERVE, json=reservation(live, BEANS=1))
        await asyncio.sleep(0.3)
        assert await shop.reservation_status(live) == "reserved"


# ------------------------------------------------------------------------------------------------- events


async def test_stock_low_is_written_to_the_outbox_once_when_crossing_the_threshold(shop: Service) -> None:
    # BEANS: 10 on hand, threshold 5.
    await shop.client.post(RESERVE, json=reservation(order(), BEANS=5))  # 5 left: not below yet
    assert await _outbox(shop, "stock.low.v1") == []
    await shop.client.post(RESERVE, json=reservation(order(), BEANS=1))  # 4 left: crossed
    await shop.client.post(RESERVE, json=reservation(order(), BEANS=1))  # 3 left: still low, no second alert
    events = await _outbox(shop, "stock.low.v1")
    assert len(events) == 1
    assert events[0]["data"] == {"sku": "BEANS", "available": 4, "threshold": 5}


async def test_a_refused_reservation_writes_no_event(shop: Service) -> None:
    response = await shop.client.post(RESERVE, json=reservation(order(), BEANS=8, MUG=9))
    assert response.status_code == 409
    assert await _outbox(shop, "stock.low.v1") == []


async def _outbox(shop: Service, type_: str) -> list[dict[str, Any]]:
    rows = await shop.db.fetch("SELECT payload FROM outbox WHERE type = :type ORDER BY seq", {"type": type_})
    return [json.loads(row["payload"]) for row in rows]


# ---------------------------------------------------------------------------------------- database rules


async def test_database_refuses_stock_that_is_not_conserved(shop: Service) -> None:
    with pytest.raises(IntegrityError):
        await shop.db.execute("UPDATE stock SET on_hand = on_hand + 1 WHERE sku = 'BEANS'")
    with pytest.raises(IntegrityError):
        await shop.db.execute("UPDATE stock SET on_hand = on_hand - 11, reserved = reserved + 11 WHERE sku = 'BEANS'")
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}


# -------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": -1}]}, "lines.0.quantity"),
        ({"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": 0}]}, "lines.0.quantity"),
        ({"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": "2"}]}, "lines.0.quantity"),
        ({"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": 1.5}]}, "lines.0.quantity"),
        ({"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": 1, "price": 1}]}, "lines.0.price"),
        ({"order_id": "o-1", "lines": [{"sku": "", "quantity": 1}]}, "lines.0.sku"),
        ({"order_id": "o-1", "lines": []}, "lines"),
        ({"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": 1}] * 2}, "lines"),
        ({"lines": [{"sku": "BEANS", "quantity": 1}]}, "order_id"),
        ({"order_id": "a b/c", "lines": [{"sku": "BEANS", "quantity": 1}]}, "order_id"),
        ({"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": 1}], "status": "committed"}, "status"),
    ],
)
async def test_bad_reservation_is_a_422_naming_the_field(shop: Service, body: dict[str, Any], field: str) -> None:
    response = await shop.client.post(RESERVE, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert field in problem["detail"]
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}


async def test_malformed_json_is_a_422_problem(shop: Service) -> None:
    response = await shop.client.post(
        RESERVE, content=b'{"order_id": "o-1", "lines": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_bad_order_id_in_the_path_is_a_422(shop: Service) -> None:
    response = await shop.client.post(f"{RESERVE}/{'x' * 65}/commit")
    assert response.status_code == 422
    assert "order_id" in response.json()["detail"]


# ------------------------------------------------------------------------------------ the lean internal routes


async def test_internal_routes_answer_as_fastapi_does(shop: Service) -> None:
    """The internal routes are lean routes (microshop_kit.lean): each request answered byte for byte as FastAPI's
    own handling of the route answers it; a write is sent twice, so each is one the route replays."""
    order_id, other = order(), order()
    checks: list[LeanCheck] = [
        ("GET", "/internal/v1/products?sku=BEANS&sku=MUG&sku=NOPE", True, {}),
        ("GET", "/internal/v1/products", False, {}),
        ("GET", "/internal/v1/products?sku=no%20spaces", False, {}),
        ("POST", RESERVE, True, {"json": reservation(order_id, BEANS=2, MUG=1)}),
        ("POST", RESERVE, True, {"json": reservation(order_id, BEANS=3)}),  # other lines: refused
        ("POST", RESERVE, True, {"json": reservation(other, MUG=9)}),  # out of stock
        ("POST", RESERVE, False, {"json": reservation(other, MUG=0)}),
        ("POST", RESERVE, False, {"json": {"order_id": other}}),
        ("POST", f"{RESERVE}/{order_id}/commit", True, {}),
        ("POST", f"{RESERVE}/{order_id}/release", True, {}),  # committed: refused
        ("POST", f"{RESERVE}/{order_id}/return", True, {}),
        ("POST", f"{RESERVE}/{other}/commit", True, {}),  # no such reservation
        ("POST", f"{RESERVE}/not%20an%20id/commit", False, {}),
    ]
    statuses = await compare_each_with_fastapi(shop.client, checks)
    assert statuses == [200, 422, 422, 201, 422, 409, 422, 422, 200, 409, 200, 404, 422]
