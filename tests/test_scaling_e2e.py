"""Independent scaling, with real processes: two instances each of products and notifications behind the gateway
share the work (each event handled once per service, not once per instance), and instances restarted one at a
time under load fail no request."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from microshop_launcher import Platform

from .conftest import Shop, _platform

pytestmark = pytest.mark.e2e

SCALED = ("products", "notifications")
#: The gateway's one-second microcache would answer repeated catalog reads itself (every read must reach
#: products), and its per-account checkout budget (30 a minute) would refuse the load's checkouts.
GATEWAY_ENV = {"GATEWAY_RESPONSE_CACHE_SECONDS": "0", "GATEWAY_RATE_LIMITING": "false"}


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform with a second instance of products and of notifications; their callers (the gateway and
    orders) are restarted after they start, so that their upstream lists name both instances of each."""
    platforms = _platform(tmp_path_factory.mktemp("scaled"), extra_env=GATEWAY_ENV)
    platform = next(platforms)
    try:
        for name in SCALED:
            platform.start_instance(name)
        for caller in ("orders", "gateway"):
            platform.restart(caller)
        yield platform
    finally:
        platforms.close()


def catalog_requests(platform: Platform, service: str, instance: int) -> int:
    """Catalog reads one instance has served, from its own /metrics."""
    text = httpx.get(f"{platform.url(service, instance)}/metrics", timeout=10).text
    pattern = r'^http_requests_total\{[^}]*route="/api/v1/products"[^}]*\} ([0-9.e+]+)$'
    return int(sum(float(value) for value in re.findall(pattern, text, re.M)))


def log_events(platform: Platform, service: str, instance: int) -> list[dict[str, object]]:
    """The JSON log lines of one instance (all its runs: the launcher appends to the same file)."""
    path: Path = platform.root / "logs" / f"{service}-{instance}.log"
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def sent_by(platform: Platform, instance: int) -> list[str]:
    """Event ids of the messages one notifications instance sent."""
    return [str(e["event_id"]) for e in log_events(platform, "notifications", instance) if e["event"] == "message sent"]


def redelivered(platform: Platform) -> list[str]:
    """Consumer log lines of an event reaching notifications a second time (the inbox caught it)."""
    events = [e for i in (0, 1) for e in log_events(platform, "notifications", i)]
    return [str(e["event"]) for e in events if "was already handled" in str(e["event"])]


def checkout(shop: Shop, method: str, sku: str) -> str:
    shop.fill_cart([(sku, 1)])
    response = shop.place_order(method)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "CONFIRMED", response.text
    return str(response.json()["id"])


def assert_each_order_emailed_once(shop: Shop, orders: list[str]) -> None:
    mails = shop.wait_mails(len(orders), subject_has="confirmed", timeout=60)
    subjects = [mail["subject"].lower() for mail in mails]
    counts = {order: sum(order[:8].lower() in subject for subject in subjects) for order in orders}
    assert set(counts.values()) == {1}, f"confirmation mails per order: {counts}"


def best_stocked(shop: Shop) -> tuple[str, int]:
    """The SKU with the most units available, and how many."""
    product = max(shop.products(limit=100), key=lambda p: int(p["available"]))
    return str(product["sku"]), int(product["available"])


def test_two_instances_of_a_service_share_its_work_and_handle_each_event_once(
    scaled: Platform, shop_for: Callable[[Platform], Shop]
) -> None:
    shop = shop_for(scaled)
    shop.sign_up()
    shop.sign_in()
    method, (sku, available) = shop.card(), best_stocked(shop)
    assert available >= 20, f"the catalog has no SKU with 20 units: {sku} has {available}"
    orders = [checkout(shop, method, sku) for _ in range(10)]
    for page in range(40):
        assert shop.http.get("/api/v1/products", params={"limit": 3, "page": page % 4 + 1}).status_code == 200

    assert_each_order_emailed_once(shop, orders)
    served = [catalog_requests(scaled, "products", i) for i in (0, 1)]
    assert min(served) > 0, f"catalog reads served per products instance: {served}"
    sent = [sent_by(scaled, i) for i in (0, 1)]
    assert min(map(len, sent)) > 0, f"messages sent per notifications instance: {list(map(len, sent))}"
    both = Counter(sent[0] + sent[1])
    assert [event for event, times in both.items() if times > 1] == [], "an event was sent by both instances"
    assert redelivered(scaled) == [], "an event reached notifications twice: its instances are not one queue group"


class Load:
    """Catalog reads and checkouts through the gateway on background threads until stopped; every answer kept."""

    def __init__(self, shop: Shop, method: str, sku: str, units: int) -> None:
        self.shop, self.method, self.sku, self.units = shop, method, sku, units
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.reads = 0
        self.orders: list[str] = []
        self.threads = [
            threading.Thread(target=self._reads, name="load-reads", daemon=True),
            threading.Thread(target=self._checkouts, name="load-checkouts", daemon=True),
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _reads(self) -> None:
        with httpx.Client(base_url=self.shop.platform.gateway_url, timeout=30) as client:
            while not self.stopping.is_set() and self.reads < 20_000:
                params = {"limit": 3, "page": self.reads % 4 + 1}
                self._record("read", lambda: client.get("/api/v1/products", params=params))  # noqa: B023 - called at once
                self.reads += 1

    def _checkouts(self) -> None:
        while not self.stopping.is_set() and len(self.orders) < self.units:
            self._record("cart", lambda: self.shop.http.put("/api/v1/cart", json=self._cart(), headers=self.shop.auth))
            answer = self._record("checkout", lambda: self.shop.place_order(self.method, key=str(uuid.uuid4())))
            if answer is not None and answer.status_code == 201:
                self.orders.append(str(answer.json()["id"]))
                if answer.json()["status"] != "CONFIRMED":
                    self.failures.append(f"checkout: order {answer.json()['id']} is {answer.json()['status']}")

    def _cart(self) -> dict[str, object]:
        return {"lines": [{"sku": self.sku, "quantity": 1}]}

    def _record(self, what: str, call: Callable[[], httpx.Response]) -> httpx.Response | None:
        try:
            response = call()
        except httpx.HTTPError as exc:
            self.failures.append(f"{what}: {exc!r}")
            return None
        if response.status_code >= 400:
            self.failures.append(f"{what}: {response.status_code} {response.text[:200]}")
        return response


def restart_under_load(platform: Platform, shop: Shop, restarts: list[tuple[str, int]]) -> Load:
    """Run the load while the given instances are restarted one after the other (SIGTERM: granian stops
    accepting and drains the requests in flight, the consumers finish the message in hand; then the instance
    is started again and waited for until ready), as a rolling update does."""
    shop.sign_up()
    shop.sign_in()
    method, (sku, available) = shop.card(), best_stocked(shop)
    with Load(shop, method, sku, units=available - 5) as load:
        time.sleep(1.0)
        for name, instance in restarts:
            platform.restart(name, instance)
            time.sleep(1.0)
    assert load.reads > 50 and len(load.orders) >= 3, f"too little load: {load.reads} reads, {len(load.orders)}"
    return load


def assert_no_failure(load: Load) -> None:
    kinds = Counter(failure[:120] for failure in load.failures)
    assert not kinds, f"failed of {load.reads} reads and {len(load.orders)} orders: {kinds.most_common(5)}"


def test_instances_behind_the_gateway_restarted_under_load_fail_no_request(
    scaled: Platform, shop_for: Callable[[Platform], Shop]
) -> None:
    shop = shop_for(scaled)
    load = restart_under_load(scaled, shop, [("products", 1), ("notifications", 1), ("notifications", 0)])
    assert_no_failure(load)
    assert_each_order_emailed_once(shop, load.orders)
    assert redelivered(scaled) == []


def test_the_products_instance_orders_calls_restarted_under_load_fails_no_checkout(
    scaled: Platform, shop_for: Callable[[Platform], Shop]
) -> None:
    assert_no_failure(restart_under_load(scaled, shop_for(scaled), [("products", 0)]))
