"""The storefront in a real browser (Playwright driving Debian's Chromium) against the real platform processes.

Screenshots of the main pages, at desktop and phone width, are saved under ``var/screenshots/`` (git-ignored)
for a reviewer to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from microshop_launcher import Platform, PlatformConfig

from .conftest import DECLINED_CARD, GOOD_CARD, THREE_D_SECURE_CARD

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("MICROSHOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "a long admin passphrase"

if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
    reason = f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} -- CI must run the browser tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
Page = sync_api.Page


@pytest.fixture(scope="module")
def shop_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The platform on its embedded defaults, seeded, with an admin; yields the gateway's URL."""
    config = PlatformConfig.isolated(tmp_path_factory.mktemp("storefront"), namespace=f"t{uuid.uuid4().hex[:10]}")
    gateway = f"http://127.0.0.1:{config.ports['gateway']}"
    config.extra_env["STOREFRONT_GATEWAY_URL"] = gateway
    platform = Platform(config)
    try:
        platform.start(timeout=90)
        for args in (
            ("products", "seed"),
            ("users", "admin", "create", "--email", ADMIN_EMAIL, "--name", "Root", "--password", ADMIN_PASSWORD),
        ):
            done = platform.run_cli(*args, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
        yield gateway
    finally:
        platform.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: object, shop_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=shop_url, viewport=DESKTOP)  # type: ignore[attr-defined]
    context.set_default_timeout(30_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    """A full-page screenshot at desktop width, and one at phone width."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=SCREENSHOTS / f"{name}-phone.png", full_page=True)
    page.set_viewport_size(DESKTOP)


def sign_up(page: Page, *, via_link: bool = False) -> str:
    email = f"shopper-{uuid.uuid4().hex[:10]}@example.com"
    if not via_link:
        page.goto("/signup")
    page.get_by_label("Your name").fill("Ada Shopper")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return email


def add_to_cart(page: Page, search: str, quantity: int = 1) -> str:
    """Search with the header's box, open the first result and add it to the cart; answers its name."""
    page.goto("/")
    page.get_by_label("Search products").fill(search)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(r"/search\?q="))
    page.locator(".card-link").first.click()
    name = page.get_by_role("heading", level=1).inner_text()
    page.get_by_label("Quantity").fill(str(quantity))
    page.get_by_role("button", name="Add to cart").click()
    expect(page.locator(".flash")).to_have_text("Added to your cart.")
    return name


def pay(page: Page, card: str) -> None:
    """Fill the checkout form (a new address, a card) and place the order."""
    if page.get_by_label("A new address:").count():
        page.get_by_label("A new address:").check()
    page.get_by_label("Full name").fill("Ada Shopper")
    page.get_by_label("Address", exact=True).fill("1 Analytical Way")
    page.get_by_label("City").fill("London")
    page.get_by_label("Postal code").fill("N1 9GU")
    page.get_by_label("Country").select_option("GB")
    page.get_by_label("Card", exact=True).check()
    page.get_by_label("Card number").fill(card)
    page.get_by_label("Expiry month").select_option("12")
    page.get_by_label("Expiry year").select_option("2034")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name=re.compile(r"^Place order")).click()


def order_id_of(page: Page) -> str:
    match = re.search(r"/orders/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


def test_a_guest_browses_searches_signs_up_and_buys_two_products(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_title(re.compile("Home"))
    expect(page.locator(".card").first).to_be_visible()
    shot(page, "home")

    first = add_to_cart(page, "mug", quantity=2)
    shot(page, "cart-guest")
    page.goto("/search?q=tea")
    shot(page, "search")
    page.locator(".card-link").nth(1).click()
    shot(page, "product")
    second = page.get_by_role("heading", level=1).inner_text()
    page.get_by_role("button", name="Add to cart").click()

    page.get_by_role("link", name="or create an account").click()
    email = sign_up(page, via_link=True)
    expect(page).to_have_url(re.compile(r"/checkout"))
    summary = page.locator(".summary")
    expect(summary).to_contain_text(first)
    expect(summary).to_contain_text(second)  # the guest cart moved into the new account
    expect(page.get_by_text("4242 4242 4242 4242")).to_be_visible()  # the test cards are on the page
    shot(page, "checkout")

    pay(page, GOOD_CARD)
    expect(page.get_by_role("heading", name="Thank you! Your order is confirmed.")).to_be_visible()
    expect(page.locator("#order-status")).to_have_text("Confirmed")
    expect(page.locator(".timeline")).to_contain_text("Confirmed")
    shot(page, "confirmation")
    order_id = order_id_of(page)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Orders").click()
    row = page.locator(".order-row").filter(has_text=order_id[:8].upper())
    expect(row).to_contain_text("Confirmed")
    shot(page, "orders")

    page.goto("/cart")
    expect(page.get_by_text("Your cart is empty.")).to_be_visible()  # the cart was emptied by the order

    page.goto(f"/mailbox?to={email}")
    subject = re.compile(rf"{order_id[:8].upper()} is confirmed", re.IGNORECASE)
    for _ in range(60):  # the email goes out asynchronously, through the broker and SMTP
        if page.get_by_role("link", name=subject).count():
            break
        page.wait_for_timeout(500)
        page.reload()
    page.get_by_role("link", name=subject).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("is confirmed")
    shot(page, "mailbox-message")


def test_a_declined_card_shows_the_reason_and_the_cart_survives(page: Page) -> None:
    sign_up(page)
    name = add_to_cart(page, "coffee")
    page.goto("/checkout")
    pay(page, DECLINED_CARD)

    error = page.locator("#payment-error")
    expect(error).to_contain_text("declined")
    expect(page.get_by_label("Card number")).to_have_value("")  # the card number is never shown back
    shot(page, "checkout-declined")
    page.goto("/cart")
    expect(page.locator(".cart-line")).to_contain_text(name)
    page.goto("/orders")
    expect(page.locator(".order-row").first).to_contain_text("Not completed")


def test_a_3d_secure_card_is_approved_on_the_payment_page(page: Page) -> None:
    sign_up(page)
    add_to_cart(page, "tea")
    page.goto("/checkout")
    pay(page, THREE_D_SECURE_CARD)

    expect(page).to_have_url(re.compile(r"/pay/"))
    expect(page.get_by_role("heading", name="Confirm your payment")).to_be_visible()
    expect(page.get_by_text("ending in 3184")).to_be_visible()
    shot(page, "payment-approval")
    page.get_by_role("button", name="Approve payment").click()

    expect(page.get_by_role("heading", name="Thank you! Your order is confirmed.")).to_be_visible()
    expect(page.locator("#order-status")).to_have_text("Confirmed")


def test_a_3d_secure_card_denied_leaves_the_order_not_completed(page: Page) -> None:
    sign_up(page)
    name = add_to_cart(page, "tea")
    page.goto("/checkout")
    pay(page, THREE_D_SECURE_CARD)
    page.get_by_role("button", name="Deny").click()

    expect(page).to_have_url(re.compile(r"/orders/"))
    expect(page.locator("#order-status")).to_have_text("Not completed")
    expect(page.get_by_role("alert")).to_be_visible()  # the reason, in words
    page.goto("/cart")
    expect(page.locator(".cart-line")).to_contain_text(name)


def test_a_customer_cancels_a_confirmed_order(page: Page) -> None:
    sign_up(page)
    add_to_cart(page, "mug")
    page.goto("/checkout")
    pay(page, GOOD_CARD)
    expect(page.locator("#order-status")).to_have_text("Confirmed")

    page.get_by_role("button", name="Cancel this order").click()
    expect(page.locator("#order-status")).to_have_text(re.compile("Cancelled|Confirmed"))
    for _ in range(20):  # a refund still under way shows as pending; the page updates itself
        if page.locator("#order-status").inner_text() == "Cancelled":
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(page.locator("#order-status")).to_have_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel this order")).to_have_count(0)


def test_sign_out_ends_the_session(page: Page) -> None:
    sign_up(page)
    page.get_by_role("button", name="Sign out").click()

    expect(page.locator(".flash")).to_have_text("You are signed out.")
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    page.goto("/orders")
    expect(page).to_have_url(re.compile(r"/signin\?"))
    assert not [c for c in page.context.cookies() if c["name"] == "ms_session"]


def test_an_admin_marks_an_order_shipped_and_the_customer_sees_it(page: Page, browser: object, shop_url: str) -> None:
    sign_up(page)
    add_to_cart(page, "mug")
    page.goto("/checkout")
    pay(page, GOOD_CARD)
    expect(page.locator("#order-status")).to_have_text("Confirmed")
    order_id = order_id_of(page)

    admin_context = browser.new_context(base_url=shop_url, viewport=DESKTOP)  # type: ignore[attr-defined]
    try:
        admin = admin_context.new_page()
        admin.goto("/signin?next=/admin")
        admin.get_by_label("Email").fill(ADMIN_EMAIL)
        admin.get_by_label("Password").fill(ADMIN_PASSWORD)
        admin.get_by_role("button", name="Sign in").click()
        expect(admin.get_by_role("heading", name="Admin")).to_be_visible()
        admin.get_by_role("main").get_by_role("link", name="Orders").click()
        admin.get_by_label("Order id").fill(order_id)
        admin.get_by_role("button", name="Find").click()
        admin.get_by_label("Carrier").fill("DHL")
        admin.get_by_label("Tracking number").fill("JD0123456789")
        admin.get_by_role("button", name="Mark shipped").click()
        expect(admin.locator("#order-status")).to_have_text("Shipped")
        shot(admin, "admin-order")
        admin.goto("/admin/status")
        expect(admin.get_by_role("row", name="orders ok", exact=True)).to_be_visible()  # readiness via the gateway
        shot(admin, "admin-status")
    finally:
        admin_context.close()

    page.reload()
    expect(page.locator("#order-status")).to_have_text("Shipped")
    expect(page.get_by_text("JD0123456789", exact=True)).to_be_visible()
    page.goto("/admin")
    expect(page.get_by_role("heading", name="Admins only")).to_be_visible()  # a customer is refused


def test_cookies_carry_the_right_flags_and_a_post_without_the_token_is_refused(page: Page, shop_url: str) -> None:
    sign_up(page)
    cookies = {c["name"]: c for c in page.context.cookies()}
    for name in ("ms_session", "ms_csrf"):
        assert cookies[name]["httpOnly"] is True, cookies[name]
        assert cookies[name]["sameSite"] == "Lax", cookies[name]
        assert cookies[name]["secure"] is False  # plain HTTP here; Secure when the request came over TLS
    assert page.evaluate("document.cookie") == ""  # nothing readable from scripts

    session = {"ms_session": cookies["ms_session"]["value"], "ms_csrf": cookies["ms_csrf"]["value"]}
    with httpx.Client(base_url=shop_url, cookies=session, timeout=10) as client:
        forged = client.post("/signout", data={})
        wrong = client.post("/signout", data={"csrf_token": "0" * 64})
    assert forged.status_code == 403 and "form has expired" in forged.text
    assert wrong.status_code == 403
    page.goto("/orders")  # still signed in: the refused posts changed nothing
    expect(page.get_by_role("heading", name="Your orders")).to_be_visible()
