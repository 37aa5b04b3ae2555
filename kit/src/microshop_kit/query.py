"""Query strings validated by one pydantic model in one call, for the hottest read endpoints.

FastAPI resolves each declared ``Query`` parameter on every request with several introspection steps per
parameter; on the catalog list (nine parameters) that was the largest share of the request's CPU (profiled,
bench/README.md). ``parse_query`` validates the whole query string with the model's compiled validator
instead, reports errors exactly like FastAPI's (a 422 problem naming ``["query", field]``), and
``query_parameters`` documents the same model in the OpenAPI document (``openapi_extra``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def parse_query(request: Request, model: type[M]) -> M:
    """The request's query string as ``model`` (the last value wins for a repeated name)."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [{**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every local ``$ref`` replaced by its definition (an operation has no ``$defs``)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def query_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring the model's fields as query parameters."""
    raw = model.model_json_schema()
    schema = _inline({key: value for key, value in raw.items() if key != "$defs"}, raw.get("$defs", {}))
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return {"parameters": parameters}
