"""The kit's exception tree and RFC 9457 problem details, shared by every service."""

from __future__ import annotations

from typing import Any


class MicroshopError(Exception):
    """Base of every error the kit raises."""


class ConfigError(MicroshopError):
    """A setting is missing or has a value the kit cannot use."""


class DatabaseError(MicroshopError):
    """The database failed or cannot be reached."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached right now; the caller may retry later."""


class BusError(MicroshopError):
    """The event bus failed or the broker cannot be reached."""


class UpstreamError(MicroshopError):
    """A call to another service failed."""

    def __init__(self, service: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """The other service did not answer (connection refused, timeout, circuit open)."""


class CircuitOpen(UpstreamUnavailable):
    """The circuit breaker for this upstream is open: the call was not attempted."""


class AuthError(MicroshopError):
    """A token is missing, malformed, expired or not signed by a trusted key."""


class ProblemError(MicroshopError):
    """An error that maps to one RFC 9457 problem response.

    `type_` is a stable identifier (a relative URI such as ``/problems/out-of-stock``); `errors` lists
    field-level details as ``{"loc": [...], "msg": ..., "type": ...}``.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type_ = type_
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def to_body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type_, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def not_found(what: str, key: object) -> ProblemError:
    return ProblemError(404, "Not Found", f"{what} {key!s} does not exist", type_="/problems/not-found")


def conflict(detail: str, *, type_: str = "/problems/conflict") -> ProblemError:
    return ProblemError(409, "Conflict", detail, type_=type_)


def forbidden(detail: str = "You are not allowed to do this.") -> ProblemError:
    return ProblemError(403, "Forbidden", detail, type_="/problems/forbidden")


def unauthorized(detail: str = "A valid access token is required.") -> ProblemError:
    return ProblemError(
        401, "Unauthorized", detail, type_="/problems/unauthorized", headers={"WWW-Authenticate": "Bearer"}
    )


def invalid(field: str, message: str, *, kind: str = "value_error") -> ProblemError:
    """A 422 naming the one body field at fault."""
    return ProblemError(
        422,
        "Unprocessable Content",
        f"{field}: {message}",
        type_="/problems/validation",
        errors=[{"loc": ["body", *field.split(".")], "msg": message, "type": kind}],
    )


class IntegrityError(DatabaseError):
    """A constraint was violated (unique key, foreign key, check)."""

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint
