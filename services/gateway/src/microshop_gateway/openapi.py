"""One OpenAPI document of the public API (``/api/openapi.json``) and a page listing its operations (``/api/docs``).

Each service publishes its own document at ``/openapi.json``; the gateway fetches them when first asked (and
again after ``openapi_cache_seconds``), keeps only the operations its route table sends to that same service
(so ``/internal`` and anything the table does not expose never appear), marks the ones that need a token, and
merges the schemas. Two services naming different schemas alike get them prefixed with the service's name.
A service that does not answer is left out and named in ``x-missing-services``; the document is then fetched
again sooner. The page is rendered here, without scripts or a CDN.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from microshop_gateway.domain import RouteNotFound, RouteTable
from microshop_gateway.proxy import Upstream
from microshop_kit.http import HttpPool
from microshop_kit.log import get_logger

log = get_logger("microshop.gateway.openapi")

OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: Only the JSON API goes in the document: pages of the storefront are not part of it.
PUBLIC_PREFIXES = ("/api/", "/.well-known/")
_RETRY_MISSING_AFTER = 5.0
_SCHEMA_REF = "#/components/schemas/"


def _rename_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMA_REF) and ref[len(_SCHEMA_REF) :] in renames:
            return {**node, "$ref": _SCHEMA_REF + renames[ref[len(_SCHEMA_REF) :]]}
        return {key: _rename_refs(value, renames) for key, value in node.items()}
    if isinstance(node, list):
        return [_rename_refs(item, renames) for item in node]
    return node


def public_paths(service: str, document: Mapping[str, Any], table: RouteTable) -> dict[str, dict[str, Any]]:
    """The operations of one service's document that the route table sends to that service."""
    kept: dict[str, dict[str, Any]] = {}
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(path, str) or not path.startswith(PUBLIC_PREFIXES) or not isinstance(item, dict):
            continue
        operations: dict[str, Any] = {}
        for method, operation in item.items():
            if method not in OPERATIONS or not isinstance(operation, dict):
                continue
            try:
                route = table.match(method.upper(), path)
            except RouteNotFound:
                continue
            if route.service != service:
                continue
            operation = {**operation, "tags": operation.get("tags") or [service]}
            if route.auth == "token":
                operation.setdefault("security", [{"bearerAuth": []}])
            operations[method] = operation
        if operations:
            kept[path] = operations
    return kept


def merge(documents: Mapping[str, Mapping[str, Any]], table: RouteTable, *, version: str) -> dict[str, Any]:
    """One document from the services' documents (service name -> its OpenAPI document)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for service, document in sorted(documents.items()):
        own: dict[str, Any] = (document.get("components") or {}).get("schemas") or {}
        renames = {
            name: f"{service.capitalize()}{name}"
            for name, schema in own.items()
            if name in schemas and schemas[name] != schema
        }
        for name, schema in own.items():
            schemas[renames.get(name, name)] = _rename_refs(schema, renames)
        for path, operations in public_paths(service, document, table).items():
            paths.setdefault(path, {}).update(_rename_refs(operations, renames))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "microshop API",
            "version": version,
            "description": "The public API of microshop, as served through its gateway.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


class ApiDocs:
    """The merged document, fetched lazily and kept for ``ttl`` seconds."""

    def __init__(
        self, upstreams: Mapping[str, Upstream], table: RouteTable, http: HttpPool, *, ttl: float, timeout: float
    ) -> None:
        self.table = table
        self.http = http
        self.ttl = ttl
        self.timeout = timeout
        # Only services some /api or /.well-known row leads to (not the storefront's pages).
        self.upstreams = {
            name: upstream
            for name, upstream in upstreams.items()
            if any(
                route.service == name and route.prefix.startswith(("/api", "/.well-known")) for route in table.routes
            )
        }
        self._document: dict[str, Any] | None = None
        self._body = b""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self, name: str, upstream: Upstream) -> dict[str, Any] | None:
        base = upstream.balancer.pick()
        try:
            async with self.http.session().get(
                f"{base}/openapi.json", timeout=aiohttp.ClientTimeout(total=self.timeout), allow_redirects=False
            ) as response:
                if response.status != 200:
                    log.warning("no openapi document", service=name, instance=base, status=response.status)
                    return None
                document = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("no openapi document", service=name, instance=base, error=repr(exc))
            return None
        return document if isinstance(document, dict) else None

    async def document(self) -> tuple[dict[str, Any], bytes]:
        """The merged document and its JSON bytes."""
        async with self._lock:
            if self._document is not None and time.monotonic() < self._expires:
                return self._document, self._body
            names = sorted(self.upstreams)
            fetched = await asyncio.gather(*(self._fetch(name, self.upstreams[name]) for name in names))
            documents = {name: doc for name, doc in zip(names, fetched, strict=True) if doc is not None}
            merged = merge(documents, self.table, version="1")
            missing = [name for name, doc in zip(names, fetched, strict=True) if doc is None]
            if missing:
                merged["x-missing-services"] = missing
            self._document, self._body = merged, orjson.dumps(merged)
            self._expires = time.monotonic() + (min(self.ttl, _RETRY_MISSING_AFTER) if missing else self.ttl)
            return self._document, self._body


def render_index(document: Mapping[str, Any]) -> str:
    """A plain HTML list of the operations, grouped by tag, linking to the JSON document."""
    groups: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append((method.upper(), path, operation))
    sections = []
    for tag in sorted(groups):
        rows = "".join(
            f"<tr><td><code>{html.escape(method)}</code></td><td><code>{html.escape(path)}</code></td>"
            f"<td>{html.escape(str(op.get('summary') or op.get('operationId') or ''))}</td>"
            f"<td>{'token' if op.get('security') else 'public'}</td></tr>"
            for method, path, op in sorted(groups[tag], key=lambda row: (row[1], row[0]))
        )
        sections.append(
            f"<h2>{html.escape(tag)}</h2><table><thead><tr><th>Method</th><th>Path</th><th>Summary</th>"
            f"<th>Access</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    missing = document.get("x-missing-services") or []
    note = f"<p role='status'>Not listed (no answer): {html.escape(', '.join(missing))}.</p>" if missing else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>microshop API</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .6rem;"
        "border-bottom:1px solid #ddd}</style></head><body><h1>microshop API</h1>"
        "<p>The OpenAPI 3.1 document: <a href='/api/openapi.json'>/api/openapi.json</a>. Operations marked "
        "<em>token</em> need <code>Authorization: Bearer &lt;access token&gt;</code> from "
        "<code>POST /api/v1/auth/token</code>.</p>"
        f"{note}{''.join(sections)}</body></html>"
    )


def docs_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/api/openapi.json")
    async def openapi_json(request: Request) -> Response:
        _, body = await request.app.state.gateway.docs.document()
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})

    @router.get("/api/docs")
    async def api_docs(request: Request) -> HTMLResponse:
        document, _ = await request.app.state.gateway.docs.document()
        return HTMLResponse(render_index(document), headers={"Cache-Control": "no-cache"})

    return router
