"""Lean routes (microshop_kit.lean): the same answers as FastAPI's own handling of the route, valid or not, byte
for byte, the same OpenAPI document, the lean path really taken, and routes it cannot serve refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Form, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from microshop_kit.app import AdminDep, KitDep, ServiceSpec, create_service_app
from microshop_kit.errors import ProblemError
from microshop_kit.lean import LeanRoute
from microshop_kit.settings import ServiceSettings
from microshop_kit.testing import JwtIssuer, compare_with_fastapi, jwks_server, running_app, served_by_fastapi

ThingId = Annotated[str, PathParam(min_length=1, max_length=8, pattern=r"^[a-z0-9]+$")]


class ThingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    tags: list[str] = []


class ThingOut(BaseModel):
    id: str
    name: str
    quantity: int
    tags: list[str]
    color: str | None
    limit: int


class Wrong(BaseModel):
    count: int


async def _counted(request: Request) -> int:
    """Counts its calls in the request's state: FastAPI calls a dependency once per request."""
    request.state.calls = getattr(request.state, "calls", 0) + 1
    return int(request.state.calls)


async def _counted_again(count: Annotated[int, Depends(_counted)]) -> int:
    return count


def things(route_class: type[APIRoute]) -> APIRouter:
    """Every kind of input the lean path reads, declared the usual way."""
    router = APIRouter(prefix="/internal/v1", route_class=route_class)

    @router.get("/things/{thing_id}", response_model=ThingOut)
    async def get_thing(
        thing_id: ThingId,
        kit: KitDep,
        tag: Annotated[list[str], Query(min_length=1, max_length=3)],
        limit: Annotated[int, Query(ge=1, le=50)] = 10,
        x_color: Annotated[str | None, Header()] = None,
    ) -> ThingOut:
        assert kit.settings.service_name == "lean"
        return ThingOut(id=thing_id, name="a thing", quantity=1, tags=tag, color=x_color, limit=limit)

    @router.post("/things", status_code=201, response_model=ThingOut)
    async def add_thing(body: ThingIn, idempotency_key: Annotated[str, Header(max_length=16)]) -> ThingOut:
        return ThingOut(id=idempotency_key, color=None, limit=0, **body.model_dump())

    @router.post("/things/{thing_id}/raw")
    async def raw(thing_id: ThingId, request: Request) -> JSONResponse:
        return JSONResponse({"id": thing_id, "path": request.url.path}, status_code=202, headers={"x-raw": "1"})

    @router.get("/untyped", response_model=None)
    async def untyped() -> Any:
        return {"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "text": "naïve"}

    @router.get("/refused")
    async def refused() -> ThingOut:
        raise ProblemError(409, "Conflict", "This thing is taken.", type_="/problems/taken")

    @router.get("/wrong", response_model=Wrong)
    async def wrong() -> Any:
        return {"count": "many"}

    @router.get("/admin")
    async def admin(principal: AdminDep) -> dict[str, str]:
        return {"admin": principal.user_id}

    @router.get("/calls")
    async def calls(
        count: Annotated[int, Depends(_counted)], twice: Annotated[int, Depends(_counted_again)]
    ) -> dict[str, int]:
        return {"count": count, "twice": twice}

    @router.get("/served-by")
    async def served_by(request: Request) -> dict[str, str]:
        """Which path served the request: FastAPI's own handling leaves its exit stacks in the scope."""
        return {"by": "fastapi" if "fastapi_inner_astack" in request.scope else "lean"}

    return router


def make_app(tmp_path: Path, route_class: type[APIRoute] = LeanRoute, jwks_url: str = "http://127.0.0.1:9/") -> FastAPI:
    settings = ServiceSettings(service_name="lean", data_dir=tmp_path, broker_url=None, jwks_url=jwks_url)
    return create_service_app(settings, ServiceSpec(title="lean", routers=[things(route_class)], uses_bus=False))


ISSUER = JwtIssuer()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with jwks_server(ISSUER) as jwks_url, running_app(make_app(tmp_path, jwks_url=jwks_url)) as running:
        yield running


JSON = {"content-type": "application/json"}
KEY = {**JSON, "idempotency-key": "k1"}
THING = b'{"name": "pen", "quantity": 2, "tags": ["blue"]}'

SAME_ANSWERS: list[tuple[str, str, bool, dict[str, Any]]] = [  # method, URL, served lean?, request
    ("GET", "/internal/v1/things/ab1?tag=x&tag=y&limit=5", True, {"headers": {"x-color": "red"}}),
    ("GET", "/internal/v1/things/ab1?tag=x", True, {}),
    ("GET", "/internal/v1/things/ab1", False, {}),  # the required list is missing
    ("GET", "/internal/v1/things/ab1?tag=a&tag=b&tag=c&tag=d", False, {}),  # too many
    ("GET", "/internal/v1/things/AB!?tag=x", False, {}),  # the path parameter's pattern
    ("GET", "/internal/v1/things/waytoolong?tag=x", False, {}),
    ("GET", "/internal/v1/things/ab1?tag=x&limit=many", False, {}),
    ("GET", "/internal/v1/things/ab1?tag=x&limit=0", False, {}),
    ("POST", "/internal/v1/things", True, {"content": THING, "headers": KEY}),
    ("POST", "/internal/v1/things", True, {"content": THING, "headers": {**KEY, "content-type": "application/x+json"}}),
    ("POST", "/internal/v1/things", False, {"content": THING, "headers": JSON}),  # no Idempotency-Key
    ("POST", "/internal/v1/things", False, {"content": THING, "headers": {**KEY, "idempotency-key": "k" * 17}}),
    ("POST", "/internal/v1/things", False, {"content": THING, "headers": {"idempotency-key": "k1"}}),  # no type
    ("POST", "/internal/v1/things", False, {"content": THING, "headers": {**KEY, "content-type": "text/plain"}}),
    (
        "POST",
        "/internal/v1/things",
        False,
        {"content": THING, "headers": {**KEY, "content-type": "application/a/b+json"}},
    ),
    ("POST", "/internal/v1/things", False, {"content": b"", "headers": KEY}),
    ("POST", "/internal/v1/things", False, {"content": b'{"name": "pen",', "headers": KEY}),  # not JSON
    ("POST", "/internal/v1/things", False, {"content": b"[1, 2]", "headers": KEY}),
    ("POST", "/internal/v1/things", False, {"content": b'{"name": "pen", "quantity": 0}', "headers": KEY}),
    ("POST", "/internal/v1/things", False, {"content": b'{"name": "pen", "quantity": 1, "price": 5}', "headers": KEY}),
    ("POST", "/internal/v1/things/ab1/raw", True, {}),
    ("PUT", "/internal/v1/things/ab1", False, {}),  # a method the route does not serve
    ("GET", "/internal/v1/untyped", True, {}),
    ("GET", "/internal/v1/refused", True, {}),  # a problem the endpoint raises
    ("GET", "/internal/v1/wrong", True, {}),  # the response does not match its model
    ("GET", "/internal/v1/admin", True, {"token": ["admin"]}),
    ("GET", "/internal/v1/admin", True, {"token": ["customer"]}),  # not an admin: 403
    ("GET", "/internal/v1/admin", True, {}),  # no token: 401
    ("GET", "/internal/v1/calls", True, {}),
]


@pytest.mark.parametrize(
    ("method", "url", "lean", "kwargs"), SAME_ANSWERS, ids=[f"{m} {u} {k}" for m, u, _, k in SAME_ANSWERS]
)
async def test_the_same_answer_as_fastapi(
    client: httpx.AsyncClient, method: str, url: str, lean: bool, kwargs: dict[str, Any]
) -> None:
    if "token" in kwargs:  # signed now, not when the module was collected
        kwargs = {"headers": ISSUER.headers("u1", roles=kwargs["token"])}
    await compare_with_fastapi(client, method, url, lean=lean, **kwargs)


async def test_answers_are_the_routes_own(client: httpx.AsyncClient) -> None:
    """Not only the same on both paths: what the route means (so the comparison above compares something)."""
    thing = await client.get("/internal/v1/things/ab1?tag=x&tag=y&limit=5", headers={"x-color": "red"})
    assert thing.status_code == 200
    assert thing.json() == {
        "id": "ab1",
        "name": "a thing",
        "quantity": 1,
        "tags": ["x", "y"],
        "color": "red",
        "limit": 5,
    }
    added = await client.post("/internal/v1/things", content=THING, headers=KEY)
    assert (added.status_code, added.json()["id"], added.json()["tags"]) == (201, "k1", ["blue"])
    invalid = await client.get("/internal/v1/things/ab1?tag=x&limit=0")
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["query", "limit"]
    raw = await client.post("/internal/v1/things/ab1/raw")
    assert (raw.status_code, raw.headers["x-raw"], raw.json()["path"]) == (202, "1", "/internal/v1/things/ab1/raw")
    assert (await client.get("/internal/v1/wrong")).status_code == 500
    admin = await client.get("/internal/v1/admin", headers=ISSUER.headers("u1", roles=["admin"]))
    assert admin.json() == {"admin": "u1"}
    assert (await client.get("/internal/v1/admin", headers=ISSUER.headers("u2"))).status_code == 403
    assert (await client.get("/internal/v1/calls")).json() == {"count": 1, "twice": 1}  # one call per request


async def test_a_valid_request_takes_the_lean_path(client: httpx.AsyncClient) -> None:
    assert (await client.get("/internal/v1/served-by")).json() == {"by": "lean"}
    with served_by_fastapi():
        assert (await client.get("/internal/v1/served-by")).json() == {"by": "fastapi"}


async def _marker(request: Request) -> str:
    return "declared"


async def test_dependency_overrides_are_honoured() -> None:
    app = FastAPI()
    app.router.route_class = LeanRoute

    @app.get("/served-by")
    async def served_by(request: Request, value: Annotated[str, Depends(_marker)]) -> dict[str, str]:
        return {"by": "fastapi" if "fastapi_inner_astack" in request.scope else "lean", "value": value}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/served-by")).json() == {"by": "lean", "value": "declared"}

        async def overridden(request: Request) -> str:
            return "overridden"

        app.dependency_overrides[_marker] = overridden
        assert (await client.get("/served-by")).json() == {"by": "fastapi", "value": "overridden"}


async def test_a_router_included_the_usual_way_is_served_by_fastapi() -> None:
    """``include_router`` may add a prefix and dependencies of its own: FastAPI's include context serves it."""
    app = FastAPI()

    async def counted(request: Request) -> None:
        request.state.counted = True

    app.include_router(things(LeanRoute), prefix="/v2", dependencies=[Depends(counted)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/v2/internal/v1/served-by")).json() == {"by": "fastapi"}


def test_the_openapi_document_is_unchanged(tmp_path: Path) -> None:
    assert make_app(tmp_path).openapi() == make_app(tmp_path, route_class=APIRoute).openapi()


def _declare(route: Any) -> None:
    router = APIRouter(route_class=LeanRoute)
    router.post("/x")(route)


async def _plain_dependency(request: Request) -> str:
    return "x"


def _sync_dependency(request: Request) -> str:
    return "x"


async def _uncached(value: Annotated[str, Depends(_plain_dependency, use_cache=False)]) -> None: ...


async def _with_query(q: str) -> str:
    return q


async def sync_dep_route(value: Annotated[str, Depends(_sync_dependency)]) -> None: ...
async def query_dep_route(value: Annotated[str, Depends(_with_query)]) -> None: ...
async def form_route(name: Annotated[str, Form()]) -> None: ...
async def two_bodies_route(a: ThingIn, b: ThingIn) -> None: ...
def sync_route() -> None: ...


@pytest.mark.parametrize(
    "route",
    [sync_dep_route, query_dep_route, _uncached, form_route, two_bodies_route, sync_route],
)
def test_a_route_it_cannot_serve_is_refused_when_declared(route: Any) -> None:
    with pytest.raises(TypeError, match="lean route"):
        _declare(route)


def test_a_filtered_response_model_is_refused() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def thing() -> ThingOut: ...

    with pytest.raises(TypeError, match="filters its response model"):
        router.get("/x", response_model=ThingOut, response_model_exclude_none=True)(thing)
