"""The service app factory on a tiny demo service run with its real lifespan (SQLite in tmp_path, no broker):
health, metrics, problem+json errors, the body limit, request ids, JSON logs and auth."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict

from microshop_kit.app import AdminDep, Kit, KitDep, PrincipalDep, ServiceSpec, create_service_app, every
from microshop_kit.errors import DatabaseUnavailable, ProblemError
from microshop_kit.settings import ServiceSettings
from microshop_kit.testing import JwtIssuer, jwks_server, running_app

PROBLEM_JSON = "application/problem+json"
MAX_BODY = 2048
SECRET = "s3cr3t-detail-from-/srv/demo/handlers.py"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    quantity: int


def demo_router() -> APIRouter:
    router = APIRouter()

    @router.post("/items/{item_id}", status_code=201)
    async def add_item(item_id: str, item: NewItem, kit: KitDep) -> dict[str, Any]:
        await kit.database.execute(
            "INSERT INTO items (id, name, quantity) VALUES (:id, :name, :quantity)",
            {"id": item_id, **item.model_dump()},
        )
        return {"id": item_id, **item.model_dump()}

    @router.get("/sold-out")
    async def sold_out() -> None:
        raise ProblemError(409, "Conflict", "Item abc is sold out.", type_="/problems/sold-out")

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError(SECRET)

    @router.get("/database-down")
    async def database_down() -> None:
        raise DatabaseUnavailable(f"connection to 10.0.0.7 refused ({SECRET})")

    @router.get("/me")
    async def me(principal: PrincipalDep) -> dict[str, str]:
        return {"user_id": principal.user_id}

    @router.get("/admin")
    async def admin(principal: AdminDep) -> dict[str, str]:
        return {"admin": principal.user_id}

    return router


@dataclass
class LogLines:
    """The service's log lines as rendered on stderr (JSON), parsed; read from pytest's capture."""

    capture: pytest.CaptureFixture[str] | None
    seen: list[str] = field(default_factory=list)

    @property
    def lines(self) -> list[dict[str, Any]]:
        if self.capture is not None:
            self.seen.extend(self.capture.readouterr().err.splitlines())
        return [json.loads(line) for line in self.seen if line.startswith("{")]


@dataclass
class Demo:
    app: FastAPI
    client: httpx.AsyncClient
    issuer: JwtIssuer
    logs: LogLines
    kit: Kit = field(init=False)

    def __post_init__(self) -> None:
        self.kit = self.app.state.kit

    def unraised_client(self) -> httpx.AsyncClient:
        """A client that, like a real server, answers with the app's 500 even if an exception escapes it."""
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


ReadyCheck = Callable[[Kit], Awaitable[str | None]]


@contextlib.asynccontextmanager
async def start_demo(
    tmp_path: Path, ready_checks: Sequence[ReadyCheck] = (), capture: pytest.CaptureFixture[str] | None = None
) -> AsyncIterator[Demo]:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_init.sql").write_text(
        "CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT NOT NULL, quantity INTEGER NOT NULL);\n"
    )
    issuer = JwtIssuer()
    async with jwks_server(issuer) as jwks_url:
        settings = ServiceSettings(
            service_name="demo", data_dir=tmp_path, broker_url=None, max_body_bytes=MAX_BODY, jwks_url=jwks_url
        )
        spec = ServiceSpec(title="demo", routers=[demo_router()], migrations=migrations, ready_checks=ready_checks)
        app = create_service_app(settings, spec)
        async with running_app(app) as client:
            yield Demo(app, client, issuer, LogLines(capture))


@pytest.fixture
async def demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Demo]:
    async with start_demo(tmp_path, capture=capsys) as running:
        yield running


def assert_problem(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    if type_ is not None:
        assert body["type"] == type_
    return body


# ---------------------------------------------------------------------------------------------------- health


async def test_livez_answers_ok(demo: Demo) -> None:
    response = await demo.client.get("/livez")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_database_ok(demo: Demo) -> None:
    response = await demo.client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_readyz_is_503_once_the_database_is_gone(demo: Demo) -> None:
    await demo.kit.database.close()

    response = await demo.client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("unavailable")


async def test_readyz_is_503_when_a_ready_check_raises(tmp_path: Path) -> None:
    async def search_index(kit: Kit) -> str | None:
        raise ConnectionError("index at 127.0.0.1:9200 refused")

    async with start_demo(tmp_path, ready_checks=[search_index]) as demo:
        response = await demo.client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["search_index"].startswith("unavailable")


async def test_metrics_count_requests_by_route_template(demo: Demo) -> None:
    for item_id in ("a", "b"):
        response = await demo.client.post(f"/items/{item_id}", json={"name": "pen", "quantity": 1})
        assert response.status_code == 201, response.text
    await demo.client.get("/no/such/path/a")

    response = await demo.client.get("/metrics")

    assert response.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    counts = {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for sample in families["http_requests"].samples
        if sample.name == "http_requests_total"
    }
    assert counts[("POST", "/items/{item_id}", "201")] == 2
    assert counts[("GET", "<unmatched>", "404")] == 1
    assert not any(route.startswith(("/items/a", "/no/")) for _, route, _ in counts)  # no per-id series


# -------------------------------------------------------------------------------------------------- problems


async def test_malformed_json_is_a_422_problem(demo: Demo) -> None:
    response = await demo.client.post(
        "/items/a", content=b'{"name": "pen", "quantity": ', headers={"content-type": "application/json"}
    )

    body = assert_problem(response, 422, "/problems/validation")
    assert body["errors"][0]["type"] == "json_invalid"
    assert body["errors"][0]["loc"][0] == "body"


async def test_a_field_of_the_wrong_type_is_a_422_problem_naming_it(demo: Demo) -> None:
    response = await demo.client.post("/items/a", json={"name": "pen", "quantity": "many"})

    body = assert_problem(response, 422, "/problems/validation")
    assert [error["loc"] for error in body["errors"]] == [["body", "quantity"]]
    assert "quantity" in body["detail"]
    assert body["instance"] == "/items/a"


async def test_an_unknown_field_is_a_422_problem_naming_it(demo: Demo) -> None:
    response = await demo.client.post("/items/a", json={"name": "pen", "quantity": 1, "colour": "red"})

    body = assert_problem(response, 422, "/problems/validation")
    assert [(error["loc"], error["type"]) for error in body["errors"]] == [(["body", "colour"], "extra_forbidden")]
    assert await demo.kit.database.fetchval("SELECT count(*) FROM items") == 0


async def test_an_unknown_path_is_a_404_problem(demo: Demo) -> None:
    response = await demo.client.get("/no/such/path")

    body = assert_problem(response, 404)
    assert body["instance"] == "/no/such/path"


async def test_a_problem_error_keeps_its_status_and_type(demo: Demo) -> None:
    response = await demo.client.get("/sold-out")

    body = assert_problem(response, 409, "/problems/sold-out")
    assert body["detail"] == "Item abc is sold out."


async def test_an_unexpected_error_is_a_500_problem_that_reveals_nothing(demo: Demo) -> None:
    async with demo.unraised_client() as client:
        response = await client.get("/crash", headers={"X-Request-ID": "req-crash-1"})

    body = assert_problem(response, 500)
    for leak in (SECRET, "RuntimeError", "Traceback", "handlers.py"):
        assert leak not in response.text
    assert body["detail"] == "Something went wrong on our side."
    error = next(line for line in demo.logs.lines if line["event"] == "unhandled error")
    assert SECRET in error["exception"]  # the details go to the log instead


async def test_an_unavailable_database_is_a_503_problem_with_retry_after(demo: Demo) -> None:
    response = await demo.client.get("/database-down")

    assert_problem(response, 503, "/problems/database-unavailable")
    assert int(response.headers["retry-after"]) > 0
    assert "10.0.0.7" not in response.text


# ------------------------------------------------------------------------------------------------ body limit


async def test_a_body_over_the_limit_is_refused_by_its_content_length(demo: Demo) -> None:
    big = {"name": "x" * MAX_BODY, "quantity": 1}

    response = await demo.client.post("/items/big", json=big)
    unread = await demo.client.request("GET", "/sold-out", content=b"x" * (MAX_BODY + 1))

    body = assert_problem(response, 413, "/problems/body-too-large")
    assert str(MAX_BODY) in body["detail"]
    assert await demo.kit.database.fetchval("SELECT count(*) FROM items") == 0
    assert_problem(unread, 413, "/problems/body-too-large")  # refused before any route runs, read or not


async def test_a_streamed_body_over_the_limit_is_refused_without_a_content_length(demo: Demo) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            sent.append(512)
            yield b"x" * 512
        yield b'", "quantity": 1}'

    response = await demo.client.post("/items/big", content=chunks(), headers={"content-type": "application/json"})

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    body = assert_problem(response, 413, "/problems/body-too-large")
    assert str(MAX_BODY) in body["detail"]
    assert sum(sent) < 10 * 512  # reading stopped at the limit, not at the end of the stream
    assert await demo.kit.database.fetchval("SELECT count(*) FROM items") == 0


async def test_a_body_within_the_limit_is_accepted(demo: Demo) -> None:
    response = await demo.client.post("/items/a", json={"name": "x" * (MAX_BODY - 100), "quantity": 1})

    assert response.status_code == 201, response.text


# ---------------------------------------------------------------------------------------- request id, logs


async def test_a_safe_request_id_is_echoed(demo: Demo) -> None:
    response = await demo.client.get("/livez", headers={"X-Request-ID": "req-42.a:b_c"})

    assert response.headers["x-request-id"] == "req-42.a:b_c"


@pytest.mark.parametrize("sent", [None, "has spaces", 'quote"d', "x" * 129])
async def test_a_missing_or_unsafe_request_id_is_replaced(demo: Demo, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}

    first = await demo.client.get("/livez", headers=headers)
    second = await demo.client.get("/livez", headers=headers)

    generated = first.headers["x-request-id"]
    assert generated != sent
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert second.headers["x-request-id"] != generated


async def test_problem_responses_carry_the_request_id_too(demo: Demo) -> None:
    headers = {"X-Request-ID": "req-problem-1"}

    responses = [
        await demo.client.get("/sold-out", headers=headers),
        await demo.client.get("/no/such/path", headers=headers),
        await demo.client.post("/items/a", json={"quantity": "many"}, headers=headers),
        await demo.client.post("/items/a", content=b"x" * (MAX_BODY + 1), headers=headers),
    ]

    assert [response.headers.get("x-request-id") for response in responses] == ["req-problem-1"] * 4


async def test_the_access_log_line_carries_the_request_and_trace_ids(demo: Demo) -> None:
    headers = {"X-Request-ID": "req-log-1", "traceparent": TRACEPARENT}

    response = await demo.client.post("/items/a", json={"name": "pen", "quantity": 1}, headers=headers)

    assert response.status_code == 201
    line = next(line for line in demo.logs.lines if line.get("event") == "request")
    assert line["request_id"] == "req-log-1"
    assert line["trace_id"] == TRACE_ID
    assert line["span_id"] != "00f067aa0ba902b7"  # this hop's own span in the caller's trace
    assert (line["route"], line["status"], line["level"]) == ("/items/{item_id}", 201, "info")


async def test_the_unhandled_error_log_line_carries_the_request_and_trace_ids(demo: Demo) -> None:
    headers = {"X-Request-ID": "req-crash-2", "traceparent": TRACEPARENT}

    async with demo.unraised_client() as client:
        response = await client.get("/crash", headers=headers)

    assert response.status_code == 500
    error = next(line for line in demo.logs.lines if line.get("event") == "unhandled error")
    assert (error["request_id"], error["trace_id"]) == ("req-crash-2", TRACE_ID)
    assert response.headers.get("x-request-id") == "req-crash-2"


# ------------------------------------------------------------------------------------------------------ auth


async def test_a_route_needing_a_principal_is_401_without_a_token(demo: Demo) -> None:
    response = await demo.client.get("/me")

    assert_problem(response, 401, "/problems/unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_route_needing_a_principal_is_401_with_a_token_from_another_key(demo: Demo) -> None:
    response = await demo.client.get("/me", headers=JwtIssuer().headers("u-1"))

    assert_problem(response, 401, "/problems/unauthorized")


async def test_a_route_needing_a_principal_gets_the_tokens_subject(demo: Demo) -> None:
    response = await demo.client.get("/me", headers=demo.issuer.headers("u-1"))

    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": "u-1"}


async def test_an_admin_route_is_403_for_a_customer(demo: Demo) -> None:
    response = await demo.client.get("/admin", headers=demo.issuer.headers("u-1", roles=["customer"]))

    assert_problem(response, 403, "/problems/forbidden")


async def test_an_admin_route_is_401_without_a_token(demo: Demo) -> None:
    response = await demo.client.get("/admin")

    assert_problem(response, 401)


async def test_an_admin_route_serves_an_admin(demo: Demo) -> None:
    response = await demo.client.get("/admin", headers=demo.issuer.headers("boss", roles=["admin"]))

    assert response.status_code == 200, response.text
    assert response.json() == {"admin": "boss"}


def sync_dependency() -> int:
    return 1


async def async_dependency() -> int:
    return 1


AsyncDep = Annotated[int, Depends(async_dependency)]
SyncDep = Annotated[int, Depends(sync_dependency)]


@pytest.mark.parametrize("where", ["endpoint", "dependency"])
def test_a_plain_def_route_or_dependency_is_refused_at_build(tmp_path: Path, where: str) -> None:
    """FastAPI would run it in its thread pool on every request; the kit refuses it when the app is built."""
    router = APIRouter()
    if where == "endpoint":

        @router.get("/sync")
        def sync_endpoint() -> dict[str, int]:
            return {}

    else:

        @router.get("/sync")
        async def uses_sync(one: AsyncDep, two: SyncDep) -> dict[str, int]:
            return {"sum": one + two}

    settings = ServiceSettings(service_name="demo", data_dir=tmp_path, broker_url=None)
    with pytest.raises(TypeError, match=r"/sync: .*sync_(endpoint|dependency) is a plain def"):
        create_service_app(settings, ServiceSpec(title="demo", routers=[router]))


async def test_every_runs_its_step_again_after_a_failing_round() -> None:
    rounds: list[int] = []
    third = asyncio.Event()

    async def step() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 3:
            third.set()
        if len(rounds) == 1:
            raise RuntimeError("the database is down")

    task = asyncio.create_task(every(0.01, step, "test-step"))
    async with asyncio.timeout(5):
        await third.wait()
    task.cancel()

    assert rounds == [0, 1, 2]


async def test_a_routers_routes_are_served_as_declared_from_the_apps_own_list(tmp_path: Path) -> None:
    async def needs_key(x_key: Annotated[str | None, Header()] = None) -> None:
        if x_key != "k":
            raise ProblemError(403, "Forbidden", "This needs the key.")

    internal = APIRouter(prefix="/internal/v1", tags=["internal"], dependencies=[Depends(needs_key)])

    @internal.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    inner = APIRouter()

    @inner.get("/nested")
    async def nested() -> dict[str, bool]:
        return {"nested": True}

    outer = APIRouter(prefix="/outer")
    outer.include_router(inner)  # a router with routers of its own is included the usual way
    settings = ServiceSettings(service_name="demo", data_dir=tmp_path, broker_url=None)
    app = create_service_app(settings, ServiceSpec(title="demo", routers=[internal, outer], uses_bus=False))

    # Matched one route at a time from the app's list, not through FastAPI's per-request include context.
    assert thing in [getattr(route, "endpoint", None) for route in app.routes]
    async with running_app(app) as client:
        assert (await client.get("/internal/v1/things/a", headers={"x-key": "k"})).json() == {"id": "a"}
        refused = await client.get("/internal/v1/things/a")  # the router's dependency still applies
        assert (refused.status_code, refused.headers["content-type"]) == (403, PROBLEM_JSON)
        wrong_method = await client.post("/internal/v1/things/a", headers={"x-key": "k"})
        assert (wrong_method.status_code, wrong_method.headers["content-type"]) == (405, PROBLEM_JSON)
        assert (await client.get("/outer/nested")).json() == {"nested": True}
        document = (await client.get("/openapi.json")).json()
    assert document["paths"]["/internal/v1/things/{thing_id}"]["get"]["tags"] == ["internal"]
    assert "/outer/nested" in document["paths"]
