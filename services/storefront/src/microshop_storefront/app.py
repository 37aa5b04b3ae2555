"""Wiring of the storefront: templates, static files, clients of the gateway's API and of the mail sink."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from microshop_kit.app import Kit, ServiceSpec, create_service_app
from microshop_kit.breaker import CircuitBreaker
from microshop_kit.cache import ResponseCache
from microshop_kit.http import ServiceClient
from microshop_storefront.api import ROUTERS, install_error_pages
from microshop_storefront.clients import Accounts, Api, Catalog, Mailbox, Orders, Payments
from microshop_storefront.domain import format_money
from microshop_storefront.session import CookieMiddleware, Sessions, csrf_key
from microshop_storefront.settings import StorefrontSettings
from microshop_storefront.web import Shop

HERE = Path(__file__).parent


def _templates(settings: StorefrontSettings) -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.auto_reload = False  # the templates ship with the package: no stat() of each file per render
    templates.env.filters["money"] = format_money
    templates.env.filters["segment"] = lambda value: quote(str(value), safe="")  # one path segment, "/" too
    templates.env.filters["query"] = lambda params, **more: urlencode({**params, **more})
    templates.env.globals["shop_name"] = settings.shop_name
    return templates


def create_app(settings: StorefrontSettings | None = None) -> FastAPI:
    settings = settings or StorefrontSettings()
    app: FastAPI

    secret = settings.csrf_secret.get_secret_value() if settings.csrf_secret else None

    async def start(kit: Kit) -> None:
        # Public catalog answers (Cache-Control: public) are reused for up to STOREFRONT_RESPONSE_CACHE_SECONDS,
        # like a browser's cache would; an admin change made through the storefront empties it.
        catalog_cache = ResponseCache(settings.response_cache_seconds) if settings.response_cache_seconds else None

        def api(
            name: str, url: str, timeout: float = settings.upstream_timeout, cache: ResponseCache | None = None
        ) -> Api:
            # One retry at most: a person is waiting for the page. A breaker per area, so payments being
            # down does not stop browsing.
            client = ServiceClient(
                name, url, kit.http, timeout=timeout, retries=1, breaker=CircuitBreaker(), cache=cache
            )
            return Api(client)

        accounts = Accounts(api("accounts", settings.gateway_url))
        app.state.shop = Shop(
            settings=settings,
            templates=_templates(settings),
            catalog=Catalog(api("catalog", settings.gateway_url, cache=catalog_cache)),
            accounts=accounts,
            orders=Orders(api("orders", settings.gateway_url)),
            payments=Payments(api("payments", settings.gateway_url)),
            mailbox=Mailbox(api("mailbox", settings.mailbox_url)),
            admin=api("admin", settings.gateway_url, cache=catalog_cache),
            status=api("status", settings.gateway_url),
            sessions=Sessions(accounts),
            csrf_key=csrf_key(secret, settings.data_dir),
        )

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop storefront", routers=list(ROUTERS), migrations=None, uses_bus=False, startup=[start]
        ),
    )
    install_error_pages(app)
    app.add_middleware(CookieMiddleware)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
