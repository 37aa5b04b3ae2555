"""Routes served without FastAPI's per-request machinery, declared and documented as usual.

FastAPI wraps every request in two exit stacks, its own exception wrapper and telemetry hooks, and its dependency
solver works out again, for every parameter of every request, how to read it (is it a list, which alias, is it a
model). For the requests of every checkout (the cart and the order, and the calls services make to each other: a
price lookup, a reservation, a charge; small, frequent, valid) that is a large part of the request:
``bench/internal_route.py``.

``LeanRoute`` is an ``APIRoute`` (``APIRouter(route_class=LeanRoute)``): FastAPI builds its dependant, OpenAPI
operation and fields exactly as for any route. How to read each parameter is worked out once, when the route is
declared. On a request it validates the path, query and header parameters and the JSON body with the route's own
fields, awaits the dependencies (each an ``async def`` of the ``Request`` or of other such dependencies, called
once per request), the endpoint, and writes the response model with its serializer, as FastAPI does. Everything
else is handed to FastAPI's own handling of the route: a request that does not validate (so every 422 is
FastAPI's own answer), a method the route does not serve, a route included through a router of its own
(``include_router``) or with dependency overrides (tests). A route it cannot serve this way is refused when it is
declared.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from copy import deepcopy
from typing import Any, ClassVar

from fastapi import HTTPException, Request, Response, params
from fastapi._compat import ModelField
from fastapi._compat.shared import field_annotation_is_sequence
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import _get_param_aliases, _get_param_model, _is_json_field
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import ResponseValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, _get_scope_effective_route_context
from fastapi.utils import is_body_allowed_for_status_code
from starlette.types import Message, Receive, Scope, Send

__all__ = ["LeanRoute"]


class _Dependency:
    """A dependency the lean path awaits: an ``async def`` of the ``Request`` and other such dependencies."""

    __slots__ = ("call", "dependencies", "name", "request_name")

    def __init__(self, path: str, sub: Dependant) -> None:
        others = (
            sub.path_params,
            sub.query_params,
            sub.header_params,
            sub.cookie_params,
            sub.body_params,
            sub.websocket_param_name,
            sub.http_connection_param_name,
            sub.response_param_name,
            sub.background_tasks_param_name,
            sub.security_scopes_param_name,
            sub.own_oauth_scopes,
            sub.concurrency,
        )
        if sub.name is None or not inspect.iscoroutinefunction(sub.call) or not sub.use_cache or any(others):
            name = getattr(sub.call, "__qualname__", repr(sub.call))
            raise TypeError(
                f"{path}: a lean route's dependencies are async and take the Request or other dependencies "
                f"alone; {name} does not"
            )
        self.name: str = sub.name
        self.call: Callable[..., Coroutine[Any, Any, Any]] = sub.call
        self.request_name = sub.request_param_name
        self.dependencies = [_Dependency(path, inner) for inner in sub.dependencies]


async def _solve(dependencies: list[_Dependency], request: Request, solved: dict[Any, Any]) -> dict[str, Any]:
    """The dependencies' values by parameter name, each called once per request as FastAPI does (``solved``)."""
    values: dict[str, Any] = {}
    for dependency in dependencies:
        if dependency.call not in solved:
            arguments = await _solve(dependency.dependencies, request, solved) if dependency.dependencies else {}
            if dependency.request_name:
                arguments[dependency.request_name] = request
            solved[dependency.call] = await dependency.call(**arguments)
        values[dependency.name] = solved[dependency.call]
    return values


class _Invalid(Exception):
    """The request does not validate: FastAPI answers it."""


class _Param:
    """How FastAPI reads one path, query or header parameter (``request_params_to_args``), worked out once."""

    __slots__ = ("field", "key", "listed", "loc")

    def __init__(self, path: str, field: ModelField) -> None:
        aliases = _get_param_aliases(field)
        if _get_param_model(field) is not None or len(aliases) != 1:
            raise TypeError(f"{path}: a lean route takes plain parameters; {field.name} is a model or has aliases")
        self.field = field
        self.key = aliases[0][1]
        self.listed = not _is_json_field(field) and field_annotation_is_sequence(field.field_info.annotation)
        self.loc = (field.field_info.in_.value, self.key)  # type: ignore[attr-defined]

    def read(self, received: Any, multi: bool) -> Any:
        """The parameter's validated value; ``_Invalid`` when it is missing or does not validate."""
        value = received.getlist(self.key) if self.listed and multi else received.get(self.key)
        if value is None or (self.listed and len(value) == 0):
            if self.field.field_info.is_required():
                raise _Invalid
            value = deepcopy(self.field.default)
            if not self.field.field_info.validate_default:
                return value
        found, errors = self.field.validate(value, {}, loc=self.loc)
        if errors:
            raise _Invalid
        return found


class LeanRoute(APIRoute):
    #: Off: every request takes FastAPI's own path (the tests compare both).
    lean: ClassVar[bool] = True

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        d = self.dependant
        _check(self)
        self._dependencies = [_Dependency(self.path, sub) for sub in d.dependencies]
        self._path = [_Param(self.path, field) for field in d.path_params]
        self._query = [_Param(self.path, field) for field in d.query_params]
        self._headers = [_Param(self.path, field) for field in d.header_params]
        self._body = d.body_params[0] if d.body_params else None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._mine(scope):
            await super().handle(scope, receive, send)
            return
        request = Request(scope, receive, send)
        body = b""
        if self._body is not None:
            try:
                body = await request.body()
            except HTTPException:
                raise
            except Exception as exc:  # as FastAPI answers it
                raise HTTPException(400, "There was an error parsing the body") from exc
        try:
            values = self._values(request, body)
        except _Invalid:
            await super().handle(scope, receive if self._body is None else _replay(body, receive), send)
            return
        if self._dependencies:
            values.update(await _solve(self._dependencies, request, {}))
        if self.dependant.request_param_name:
            values[self.dependant.request_param_name] = request
        assert self.dependant.call is not None
        result = await self.dependant.call(**values)
        response = result if isinstance(result, Response) else self._response(result)
        await response(scope, receive, send)

    def _mine(self, scope: Scope) -> bool:
        """Whether the lean path serves this request: the route is served as declared (not through a router
        included with its own prefix, dependencies or overrides), the method is the route's, no overrides."""
        return (
            self.lean
            and scope["method"] in (self.methods or ())
            and _get_scope_effective_route_context(scope) is None
            and not _overridden(self)
        )

    def _values(self, request: Request, body: bytes) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self._path:
            values[param.field.name] = param.read(request.path_params, multi=False)
        for param in self._query:
            values[param.field.name] = param.read(request.query_params, multi=True)
        for param in self._headers:
            values[param.field.name] = param.read(request.headers, multi=True)
        if self._body is not None:
            if not body or not _is_json(request.headers.get("content-type")):
                raise _Invalid
            try:
                document = json.loads(body)
            except ValueError as exc:
                raise _Invalid from exc
            found, errors = self._body.validate(document, {}, loc=("body",))
            if errors:
                raise _Invalid
            values[self._body.name] = found
        return values

    def _response(self, result: Any) -> Response:
        status = self.status_code or 200
        field = self.response_field
        if field is None:
            response: Response = JSONResponse(jsonable_encoder(result), status_code=status)
        else:
            value, errors = field.validate(result, {}, loc=("response",))
            if errors:
                raise ResponseValidationError(errors=errors, body=result)
            response = Response(field.serialize_json(value), status_code=status, media_type="application/json")
        if not is_body_allowed_for_status_code(status):
            response.body = b""
        return response


def _check(route: APIRoute) -> None:
    """Refuse, when it is declared, a route the lean path would not serve as FastAPI does."""
    d = route.dependant
    why = None
    if not inspect.iscoroutinefunction(d.call):
        why = "the endpoint is not async def"
    elif d.cookie_params or d.background_tasks_param_name or d.response_param_name:
        why = "it takes cookies, background tasks or the response"
    elif d.websocket_param_name or d.http_connection_param_name or d.security_scopes_param_name:
        why = "it takes a connection or security scopes"
    elif len(d.body_params) > 1 or route._embed_body_fields:
        why = "its body is not one model"
    elif d.body_params and isinstance(d.body_params[0].field_info, (params.Form, params.File)):
        why = "its body is a form"
    elif not isinstance(route.response_class, DefaultPlaceholder):
        why = "it sets a response class"
    elif (
        route.response_model_include is not None
        or route.response_model_exclude is not None
        or not route.response_model_by_alias
        or route.response_model_exclude_unset
        or route.response_model_exclude_defaults
        or route.response_model_exclude_none
    ):
        why = "it filters its response model"
    elif route.stream_item_field is not None or route.is_json_stream:
        why = "it streams"
    if why:
        raise TypeError(f"{route.path}: a lean route cannot serve this endpoint: {why}")


def _overridden(route: APIRoute) -> bool:
    provider = route.dependency_overrides_provider
    return bool(provider is not None and getattr(provider, "dependency_overrides", None))


def _is_json(content_type: str | None) -> bool:
    """What FastAPI parses as JSON: ``application/json`` or ``application/<anything>+json``."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind.count("/") != 1 or not kind.startswith("application/"):
        return False
    return kind == "application/json" or kind.endswith("+json")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read once more, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
