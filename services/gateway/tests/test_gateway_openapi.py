"""One OpenAPI document of the public API, merged from the services' documents, and its docs page."""

from __future__ import annotations

from typing import Any

from microshop_gateway.domain import RouteTable
from microshop_gateway.openapi import merge
from microshop_gateway.settings import DEFAULT_ROUTES

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any


def operation(summary: str, schema: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"}}}
    if schema:
        op["requestBody"] = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}
    return op


USERS_DOC = {
    "openapi": "3.1.0",
    "paths": {
        "/api/v1/users": {"post": operation("Sign up", "Address"), "get": operation("List")},
        "/api/v1/auth/token": {"post": operation("Sign in")},
        "/internal/v1/users/{user_id}": {"get": operation("Internal lookup")},
        "/api/v1/products": {"get": operation("Not users' to publish")},
        "/livez": {"get": operation("Liveness")},
    },
    "components": {"schemas": {"Address": {"type": "object", "properties": {"street": {"type": "string"}}}}},
}
ORDERS_DOC = {
    "openapi": "3.1.0",
    "paths": {"/api/v1/orders": {"post": operation("Place an order", "Address")}},
    "components": {"schemas": {"Address": {"type": "object", "properties": {"line1": {"type": "string"}}}}},
}


def test_merge_keeps_public_routes_of_each_service_and_renames_clashing_schemas() -> None:
    merged = merge({"users": USERS_DOC, "orders": ORDERS_DOC}, RouteTable(DEFAULT_ROUTES), version="1")

    assert sorted(merged["paths"]) == ["/api/v1/auth/token", "/api/v1/orders", "/api/v1/users"]
    assert "security" not in merged["paths"]["/api/v1/users"]["post"]  # sign up is public
    assert merged["paths"]["/api/v1/users"]["get"]["security"] == [{"bearerAuth": []}]
    order_body = merged["paths"]["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]
    user_body = merged["paths"]["/api/v1/users"]["post"]["requestBody"]["content"]["application/json"]
    assert order_body["schema"]["$ref"] == "#/components/schemas/Address"  # services are merged by name
    assert user_body["schema"]["$ref"] == "#/components/schemas/UsersAddress"
    assert merged["components"]["schemas"]["Address"]["properties"] == {"line1": {"type": "string"}}
    assert merged["components"]["schemas"]["UsersAddress"]["properties"] == {"street": {"type": "string"}}
    assert merged["paths"]["/api/v1/orders"]["post"]["tags"] == ["orders"]


async def test_the_gateway_serves_the_merged_document_and_a_page_of_operations(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    upstreams["users"].openapi = USERS_DOC
    upstreams["orders"].openapi = ORDERS_DOC
    upstreams["payments"].openapi_status = 503
    async with make_gateway() as gateway:
        document = await gateway.get("/api/openapi.json")
        again = await gateway.get("/api/openapi.json")
        page = await gateway.get("/api/docs")

    assert document.status_code == 200
    assert document.headers["content-type"] == "application/json"
    paths = document.json()["paths"]
    assert "/api/v1/auth/token" in paths and "/api/v1/orders" in paths
    assert not [path for path in paths if path.startswith("/internal") or path == "/livez"]
    assert "payments" in document.json()["x-missing-services"]
    assert again.json() == document.json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/v1/auth/token" in page.text and "Sign in" in page.text and "/internal" not in page.text
    assert "<script" not in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    # Fetched once for both documents and the page (kept for openapi_cache_seconds); not the storefront's.
    assert upstreams["users"].openapi_served == 1
    assert upstreams["storefront"].openapi_served == 0
