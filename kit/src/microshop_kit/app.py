"""The app factory every service is built with: health, metrics, logs, problem+json, body limit, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microshop_kit import db as dbmod
from microshop_kit.auth import JwksVerifier, Principal, principal_from_authorization
from microshop_kit.bus import EventBus
from microshop_kit.cache import ResponseCache, ResponseCacheMiddleware
from microshop_kit.context import TraceContext, clean_request_id, request_id_var, trace_var
from microshop_kit.errors import (
    DatabaseUnavailable,
    MicroshopError,
    ProblemError,
    UpstreamUnavailable,
    forbidden,
)
from microshop_kit.http import HttpPool
from microshop_kit.log import access_log, configure_logging, get_logger
from microshop_kit.settings import ServiceSettings

PROBLEM_JSON = "application/problem+json"
Handler = Callable[[dbmod.Tx, Any], Awaitable[None]]
Hook = Callable[["Kit"], Awaitable[None]]
log = get_logger("microshop.http")


async def every(seconds: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``step`` now and then every ``seconds``, for as long as the task lives (``Kit.background``). A round
    that fails is logged and the next one runs: a database outage must not end a service's upkeep."""
    while True:
        try:
            await step()
        except Exception:
            log.exception("background step failed; retrying later", step=what)
        await asyncio.sleep(seconds)


@dataclass
class Kit:
    """What a running service owns: settings, database, bus, HTTP pool, token verifier, background tasks."""

    settings: ServiceSettings
    http: HttpPool
    verifier: JwksVerifier
    metrics: CollectorRegistry
    db: dbmod.Database | None = None
    bus: EventBus | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    #: Public GET answers kept for a moment (``ServiceSpec.cached_prefixes``); writers call ``clear()``.
    response_cache: ResponseCache | None = None

    def background(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a coroutine for the life of the service; cancelled at shutdown."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    @property
    def database(self) -> dbmod.Database:
        if self.db is None:
            raise RuntimeError(f"Service {self.settings.service_name} has no database")
        return self.db


@dataclass
class ServiceSpec:
    """How one service differs from the others; everything else comes from the kit."""

    title: str
    routers: Sequence[APIRouter]
    version: str = "1.0.0"
    #: Folder of numbered SQL migrations; None when the service keeps no database.
    migrations: Path | None = None
    #: Event consumer handlers by wire name (effects run in the inbox transaction).
    handlers: Callable[[Kit], Mapping[str, Handler]] | None = None
    #: Whether the service publishes events (opens the broker even with no handlers).
    uses_bus: bool = True
    startup: Sequence[Hook] = ()
    shutdown: Sequence[Hook] = ()
    #: Extra readiness checks; each raises to report not ready.
    ready_checks: Sequence[Callable[[Kit], Awaitable[str | None]]] = ()
    #: Path prefixes left out of the OpenAPI document and the access log (e.g. internal routes).
    quiet_paths: tuple[str, ...] = ("/livez", "/readyz", "/metrics")
    #: Path prefixes whose public GET answers the response cache may reuse (kit/cache.py); none by default.
    cached_prefixes: tuple[str, ...] = ()
    #: Whether a write request served by this process empties the response cache (not in a gateway).
    cache_cleared_by_writes: bool = True


async def get_kit(request: Request) -> Kit:
    kit: Kit = request.app.state.kit
    return kit


KitDep = Annotated[Kit, Depends(get_kit)]


async def current_principal(request: Request) -> Principal:
    """The verified caller, from ``Authorization: Bearer <access token>``; 401 otherwise."""
    kit: Kit = request.app.state.kit
    return await principal_from_authorization(kit.verifier, request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def current_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise forbidden("This needs the admin role.")
    return principal


AdminDep = Annotated[Principal, Depends(current_admin)]


# ------------------------------------------------------------------------------------------------ problems


def problem_response(problem: ProblemError, instance: str | None = None) -> JSONResponse:
    return JSONResponse(
        problem.to_body(instance), status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        errors.append({"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")})
    return errors


def _install_error_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]) for e in errors[:5])
        problem = ProblemError(
            422, "Unprocessable Content", f"Invalid input: {fields}", type_="/problems/validation", errors=errors
        )
        return problem_response(problem, request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        titles = {404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large"}
        title = titles.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        # A streamed body over the limit lands here (FastAPI re-raises it): same type as the Content-Length check.
        type_ = "/problems/body-too-large" if isinstance(exc, _BodyTooLarge) else "about:blank"
        problem = ProblemError(exc.status_code, title, detail, type_=type_, headers=dict(exc.headers or {}))
        return problem_response(problem, request.url.path)

    async def on_db_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable", error=str(exc))
        problem = ProblemError(
            503,
            "Service Unavailable",
            "The database is unavailable; try again shortly.",
            type_="/problems/database-unavailable",
            headers={"Retry-After": "2"},
        )
        return problem_response(problem, request.url.path)

    async def on_upstream_down(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UpstreamUnavailable)
        problem = ProblemError(
            503,
            "Service Unavailable",
            f"The {exc.service} service is unavailable; try again shortly.",
            type_="/problems/upstream-unavailable",
            headers={"Retry-After": "2"},
            service=exc.service,
        )
        return problem_response(problem, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", path=request.url.path)
        problem = ProblemError(500, "Internal Server Error", "Something went wrong on our side.")
        return problem_response(problem, request.url.path)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(DatabaseUnavailable, on_db_down)
    app.add_exception_handler(UpstreamUnavailable, on_upstream_down)
    app.add_exception_handler(MicroshopError, on_unexpected)
    app.add_exception_handler(Exception, on_unexpected)


# ---------------------------------------------------------------------------------------------- middleware


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; FastAPI re-raises HTTPExceptions."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class _Metrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        labels = ["service", "method", "route", "status"]
        self.requests = Counter("http_requests_total", "HTTP requests", labels, registry=registry)
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration",
            ["service", "method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge("http_requests_in_flight", "Requests being served", ["service"], registry=registry)
        self.service = service
        self.busy = self.in_flight.labels(service)
        # Labelled children, looked up once per label set (prometheus_client's labels() costs microseconds a call).
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counted = self._counted.get((method, route, str(status)))
        if counted is None:
            counted = self.requests.labels(self.service, method, route, str(status))
            self._counted[(method, route, str(status))] = counted
        counted.inc()
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[(method, route)] = self.duration.labels(self.service, method, route)
        timed.observe(seconds)


#: ASGI scope keys a layer in front of the router may set for the access log and metrics: the route's name
#: (when no router route matched) and the upstream service that answered (the gateway).
ROUTE_KEY = "microshop.route"
UPSTREAM_KEY = "microshop.upstream"


class KitMiddleware:
    """Request id and trace context, body size limit, metrics and one access log line per request."""

    def __init__(self, app: ASGIApp, *, service: str, max_body: int, metrics: _Metrics, quiet: tuple[str, ...]) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        self.metrics = metrics
        self.quiet = quiet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = clean_request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
        parent = TraceContext.parse(headers.get(b"traceparent", b"").decode("latin-1"))
        trace = parent.child() if parent else TraceContext.new()
        rid_token, trace_token = request_id_var.set(request_id), trace_var.set(trace)
        started, status = time.perf_counter(), 500
        response_started = False

        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            status = 413
            await self._too_large(scope, send, request_id)
            self._finish(scope, status, started)
            request_id_var.reset(rid_token)
            trace_var.reset(trace_token)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.busy.inc()
        try:
            await self.app(scope, limited_receive, tracked_send)
        except _BodyTooLarge:
            if not response_started:
                status = 413
                await self._too_large(scope, send, request_id)
        except Exception:
            if response_started:
                raise
            # Answered here, not by Starlette's ServerErrorMiddleware (outside this one, after the request and
            # trace ids are reset): the log line keeps both ids and the 500 keeps its X-Request-ID.
            log.exception("unhandled error", path=scope.get("path", ""))
            problem = ProblemError(500, "Internal Server Error", "Something went wrong on our side.")
            await problem_response(problem, scope.get("path"))(scope, receive, tracked_send)
        finally:
            self.metrics.busy.dec()
            self._finish(scope, status, started)
            request_id_var.reset(rid_token)
            trace_var.reset(trace_token)

    async def _too_large(self, scope: Scope, send: Send, request_id: str) -> None:
        problem = ProblemError(
            413,
            "Content Too Large",
            f"The request body is larger than {self.max_body} bytes.",
            type_="/problems/body-too-large",
        )
        response = problem_response(problem, scope.get("path"))
        response.headers["x-request-id"] = request_id
        response.headers["connection"] = "close"

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)

    def _finish(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        # A router's route template, or the name an ASGI layer in front of it gave (the gateway's table row).
        template = scope.get(ROUTE_KEY) or getattr(scope.get("route"), "path", None) or "<unmatched>"
        method = scope.get("method", "")
        self.metrics.observe(method, template, status, elapsed)
        path = scope.get("path", "")
        if not path.startswith(self.quiet):
            extra = {"upstream": scope[UPSTREAM_KEY]} if UPSTREAM_KEY in scope else {}
            access_log(
                method=method, path=path, route=template, status=status, duration_ms=round(elapsed * 1000, 2), **extra
            )


# ------------------------------------------------------------------------------------------------- factory


def _health_router(spec: ServiceSpec) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(kit: KitDep) -> Response:
        checks: dict[str, str] = {}
        if kit.db is not None:
            try:
                await kit.db.ping()
                checks["database"] = "ok"
            except DatabaseUnavailable as exc:
                checks["database"] = f"unavailable: {exc}"
        if kit.bus is not None and kit.bus.enabled:
            checks["broker"] = "ok" if kit.bus.connected else "unavailable"
        for check in spec.ready_checks:
            try:
                checks[check.__name__] = await check(kit) or "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
                checks[check.__name__] = f"unavailable: {exc}"
        ready = all(value == "ok" or not value.startswith("unavailable") for value in checks.values())
        body = {"status": "ready" if ready else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics(kit: KitDep) -> Response:
        return Response(generate_latest(kit.metrics), media_type=CONTENT_TYPE_LATEST)

    return router


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    kit: Kit = app.state.kit
    spec: ServiceSpec = app.state.spec
    settings = kit.settings
    if spec.migrations is not None:
        kit.db = await dbmod.connect(settings.resolved_database_url())
        applied = await kit.db.migrate(settings.service_name, spec.migrations)
        if applied:
            log.info("migrations applied", migrations=applied)
    if spec.uses_bus and kit.db is not None:
        handlers = dict(spec.handlers(kit)) if spec.handlers else {}
        kit.bus = EventBus(settings, kit.db, consumer=settings.service_name, handlers=handlers)
        await kit.bus.start()
    for hook in spec.startup:
        await hook(kit)
    log.info("service started", port=settings.port, instance=settings.instance_id)
    try:
        yield
    finally:
        for hook in spec.shutdown:
            await hook(kit)
        for task in kit.tasks:
            task.cancel()
        await asyncio.gather(*kit.tasks, return_exceptions=True)
        if kit.bus is not None:
            await kit.bus.close()
        await kit.http.close()
        if kit.db is not None:
            await kit.db.close()


def _refuse_thread_pool(app: FastAPI) -> None:
    """Refuse a route whose endpoint or dependency is a plain ``def``: FastAPI runs those in its thread pool, a
    hand-off to another thread and back on every request (measured: ~0.8 ms of CPU per storefront page)."""
    routes: list[Any] = []
    for route in app.routes:  # FastAPI keeps an included router as one entry that lists its routes
        contexts = getattr(route, "effective_route_contexts", None)
        routes.extend(contexts() if contexts else [route])
    for route in routes:
        if not isinstance(getattr(route, "dependant", None), Dependant):
            continue
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            pending.extend(dependant.dependencies)
            call = dependant.call
            if call is None or inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
                continue
            if inspect.iscoroutinefunction(getattr(call, "__call__", None)):  # noqa: B004 - an async callable object
                continue
            name = getattr(call, "__qualname__", repr(call))
            raise TypeError(f"{route.path}: {name} is a plain def; make it async def (no thread pool per request)")


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Serve the router's routes from the app's own route list, as ``app.include_router(router)`` would.

    FastAPI (0.165) keeps an included router as one entry and, on every request, matches each of its routes
    through an include context twice (once to choose the router, once inside it): ~50-60 us of a users lookup's
    ~200 us in one process. The routes themselves already carry the router's prefix, tags, dependencies and
    responses (``APIRouter.add_api_route`` applies them when a route is declared), so listing them on the app
    serves and documents them the same way, matched once each. A router that includes routers of its own is
    included the usual way."""
    if any(not isinstance(route, APIRoute) for route in router.routes):
        app.include_router(router)
        return
    app.router.routes.extend(router.routes)


def create_service_app(settings: ServiceSettings, spec: ServiceSpec) -> FastAPI:
    """Build a service's ASGI app: the spec's routers plus everything every service has."""
    configure_logging(settings.service_name, settings.log_level, json=settings.log_json)
    app = FastAPI(
        title=spec.title,
        version=spec.version,
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
        # The kit does its own request ids, traces, metrics and logs; FastAPI's OpenTelemetry hook would
        # otherwise look up its global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    registry = CollectorRegistry()
    http = HttpPool()
    verifier = JwksVerifier(settings.jwks_url, settings.jwt_issuer, settings.jwt_audience, http)
    app.state.kit = Kit(settings=settings, http=http, verifier=verifier, metrics=registry)
    app.state.spec = spec
    _install_error_handlers(app)
    for router in (_health_router(spec), *spec.routers):
        _add_routes(app, router)
    _refuse_thread_pool(app)
    if spec.cached_prefixes and settings.response_cache_seconds > 0:
        cache = ResponseCache(settings.response_cache_seconds)
        app.state.kit.response_cache = cache
        app.add_middleware(
            ResponseCacheMiddleware,
            cache=cache,
            prefixes=spec.cached_prefixes,
            cleared_by_writes=spec.cache_cleared_by_writes,
        )
    app.add_middleware(
        KitMiddleware,
        service=settings.service_name,
        max_body=settings.max_body_bytes,
        metrics=_Metrics(registry, settings.service_name),
        quiet=spec.quiet_paths,
    )
    return app
