"""Wiring of the storefront: templates, static files, and clients of the products API and the mail sink."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from microshop_kit.app import Kit, ServiceSpec, create_service_app
from microshop_kit.breaker import CircuitBreaker
from microshop_kit.http import ServiceClient
from microshop_storefront.api import Shop, router
from microshop_storefront.clients import Catalog, Mailbox
from microshop_storefront.domain import format_money
from microshop_storefront.settings import StorefrontSettings

HERE = Path(__file__).parent


def _templates(settings: StorefrontSettings) -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["money"] = format_money
    templates.env.filters["segment"] = lambda value: quote(str(value), safe="")  # one path segment, "/" too
    templates.env.globals["shop_name"] = settings.shop_name
    return templates


def create_app(settings: StorefrontSettings | None = None) -> FastAPI:
    settings = settings or StorefrontSettings()
    app: FastAPI

    async def start(kit: Kit) -> None:
        def client(name: str, url: str) -> ServiceClient:
            # One retry at most: a person is waiting for the page.
            return ServiceClient(
                name, url, kit.http, timeout=settings.upstream_timeout, retries=1, breaker=CircuitBreaker()
            )

        app.state.shop = Shop(
            templates=_templates(settings),
            catalog=Catalog(client("products", settings.products_url)),
            mailbox=Mailbox(client("mailbox", settings.mailbox_url)),
            page_size=settings.page_size,
        )

    app = create_service_app(
        settings,
        ServiceSpec(title="microshop storefront", routers=[router], migrations=None, uses_bus=False, startup=[start]),
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
