"""The local mailbox pages, over a real HTTP stand-in of the mail sink."""

from __future__ import annotations

import html
from typing import Any

import httpx

StorefrontFactory = Any


async def test_mailbox_lists_messages_with_subject_recipient_and_date(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/mailbox")

    assert response.status_code == 200
    page = response.text
    assert "<title>Mailbox — microshop</title>" in page
    assert "Your order is confirmed" in page and "ada@example.com" in page
    assert "Welcome to microshop" in page and "bob@example.com" in page
    assert "Tue, 14 Nov 2023 22:13:22 +0000" in page
    assert page.index("Your order is confirmed") < page.index("Welcome to microshop")
    assert 'href="/mailbox/1700000002.M2P1Q2.host"' in page


async def test_mailbox_filter_by_recipient_is_passed_on(storefront: httpx.AsyncClient, apis: Any) -> None:
    response = await storefront.get("/mailbox", params={"to": "bob@example.com"})

    assert apis.mailbox_queries[-1] == {"to": "bob@example.com"}
    assert "Welcome to microshop" in response.text and "Your order is confirmed" not in response.text


async def test_a_message_shows_its_html_in_a_sandboxed_iframe(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/mailbox/1700000002.M2P1Q2.host")

    assert response.status_code == 200
    page = response.text
    assert "<title>Your order is confirmed — microshop</title>" in page
    start = page.index("<iframe")
    iframe = page[start : page.index("</iframe>", start)]
    assert " sandbox " in iframe
    srcdoc = iframe.split('srcdoc="', 1)[1].split('"', 1)[0]
    assert "<script>" not in iframe  # the email's HTML only lives escaped inside the attribute
    assert html.unescape(srcdoc) == "<p>Thanks for your <b>order</b> &amp; more.</p><script>alert(1)</script>"


async def test_a_message_can_be_read_as_text(storefront: httpx.AsyncClient) -> None:
    as_text = await storefront.get("/mailbox/1700000002.M2P1Q2.host", params={"view": "text"})
    text_only = await storefront.get("/mailbox/1700000001.M1P1Q1.host")

    assert "<iframe" not in as_text.text and "Thanks for your order." in as_text.text
    assert "<iframe" not in text_only.text and "Welcome, Bob!" in text_only.text


async def test_unknown_message_is_a_404_page(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/mailbox/nope")

    assert response.status_code == 404
    assert "There is no such email." in response.text


async def test_mailbox_down_gives_a_friendly_503_page(make_storefront: StorefrontFactory, dead_url: str) -> None:
    async with make_storefront(mailbox_url=dead_url) as storefront:
        response = await storefront.get("/mailbox")

    assert response.status_code == 503
    assert "The mailbox is unavailable right now" in response.text
