"""The admin's orders page: the latest orders of every customer, the status filter, paging, the lookup by id,
and what a customer or a missing orders service gets instead."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import httpx

from .conftest import order_body, order_summary, signed_in

ADMIN = "admin@example.com"


class Fields(HTMLParser):
    """The form fields a person fills in (not hidden ones) and the ids that a ``<label for>`` names."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[str] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
            self.fields.append(str(found.get("id") or found.get("name")))
        if tag == "label" and found.get("for"):
            self.labelled.add(str(found["for"]))


def unlabelled(page: str) -> list[str]:
    parser = Fields()
    parser.feed(page)
    assert parser.fields, "the page has no form fields"
    return [name for name in parser.fields if name not in parser.labelled]


async def test_admin_sees_the_latest_orders_each_linking_to_its_page(storefront: httpx.AsyncClient, apis: Any) -> None:
    apis.admin_orders = [
        order_summary("c3000000-0000", "SHIPPED", user_id="user-bob", minute=3),
        order_summary("b2000000-0000", "CONFIRMED", minute=2),
        order_summary("a1000000-0000", "AWAITING_PAYMENT", minute=1),
    ]
    await signed_in(storefront, ADMIN)

    page = await storefront.get("/admin/orders")

    assert page.status_code == 200, page.text
    assert apis.admin_order_queries == [{"page": "1", "limit": "25"}]
    rows = page.text.split('id="latest-orders"', 1)[1]
    assert rows.index("C3000000") < rows.index("B2000000") < rows.index("A1000000"), "newest first, as answered"
    for order_id in ("c3000000-0000", "b2000000-0000", "a1000000-0000"):
        assert f'href="/admin/orders?id={order_id}"' in page.text
    assert "Awaiting payment" in page.text and "user-bob" in page.text and "€12.99" in page.text
    assert 'name="id"' in page.text, "the lookup by id stays"
    assert "Page 1 of 1" in page.text and 'rel="next"' not in page.text
    assert unlabelled(page.text) == []


async def test_the_status_filter_and_the_next_page_go_to_the_api(storefront: httpx.AsyncClient, apis: Any) -> None:
    apis.admin_orders = [order_summary(f"{n:08d}-ship", "SHIPPED", minute=n % 60) for n in range(60)]
    apis.admin_orders.append(order_summary("99999999-conf", "CONFIRMED"))
    await signed_in(storefront, ADMIN)

    first = await storefront.get("/admin/orders", params={"status": "SHIPPED"})
    second = await storefront.get("/admin/orders", params={"status": "SHIPPED", "page": "2"})
    unfiltered = await storefront.get("/admin/orders", params={"status": ""})

    assert apis.admin_order_queries == [
        {"status": "SHIPPED", "page": "1", "limit": "25"},
        {"status": "SHIPPED", "page": "2", "limit": "25"},
        {"page": "1", "limit": "25"},
    ]
    assert 'rel="next" href="/admin/orders?page=2"' in unfiltered.text
    assert "Page 1 of 3 (61 orders)" in unfiltered.text
    assert '<option value="SHIPPED" selected>' in first.text
    assert "99999999" not in first.text
    assert 'rel="next" href="/admin/orders?status=SHIPPED&amp;page=2"' in first.text
    assert "Page 2 of 3 (60 orders)" in second.text
    assert 'rel="prev" href="/admin/orders?status=SHIPPED&amp;page=1"' in second.text
    assert 'rel="next" href="/admin/orders?status=SHIPPED&amp;page=3"' in second.text


async def test_an_order_from_the_list_opens_with_its_ship_form(storefront: httpx.AsyncClient, apis: Any) -> None:
    order = order_body("CONFIRMED")
    apis.orders[order["id"]] = order
    await signed_in(storefront, ADMIN)

    page = await storefront.get("/admin/orders", params={"id": order["id"]})
    missing = await storefront.get("/admin/orders", params={"id": "no-such-order"})

    assert page.status_code == 200
    assert 'action="/admin/orders/0b7f7c1e-4a8e-4d36-9d1a-3f1f2c9b5a10/ship"' in page.text
    assert 'href="/admin/orders">All orders</a>' in page.text
    assert unlabelled(page.text) == []
    assert apis.admin_order_queries == [{"page": "1", "limit": "25"}], "the list is shown only when no order is"
    assert "There is no order with that id." in missing.text and 'id="f-status"' in missing.text


async def test_a_refused_lookup_says_so_instead_of_no_such_order(storefront: httpx.AsyncClient, apis: Any) -> None:
    apis.order_refusal = (403, "This needs the admin role.")
    await signed_in(storefront, ADMIN)

    page = await storefront.get("/admin/orders", params={"id": "0b7f7c1e-4a8e-4d36-9d1a-3f1f2c9b5a10"})

    assert page.status_code == 403
    assert "This needs the admin role." in page.text
    assert "There is no order with that id." not in page.text


async def test_orders_down_shows_the_unavailable_page_not_a_500(storefront: httpx.AsyncClient, apis: Any) -> None:
    apis.orders_down = True
    await signed_in(storefront, ADMIN)

    page = await storefront.get("/admin/orders")

    assert page.status_code == 503
    assert "The orders service is unavailable right now" in page.text
    assert page.headers["retry-after"] == "5"


async def test_a_customer_gets_no_order_list(storefront: httpx.AsyncClient, apis: Any) -> None:
    await signed_in(storefront)

    page = await storefront.get("/admin/orders")

    assert page.status_code == 403 and "Admins only" in page.text
    assert apis.admin_order_queries == []


async def test_an_unknown_status_is_refused_without_asking_the_api(storefront: httpx.AsyncClient, apis: Any) -> None:
    await signed_in(storefront, ADMIN)

    page = await storefront.get("/admin/orders", params={"status": "PAID"})

    assert page.status_code == 400 and "Choose a status from the list." in page.text
    assert apis.admin_order_queries == []
