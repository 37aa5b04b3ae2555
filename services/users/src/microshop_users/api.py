"""HTTP routes of the users service: schemas, routes, and domain errors mapped to problem responses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from microshop_kit.app import PROBLEM_JSON, PrincipalDep
from microshop_kit.errors import ProblemError, conflict, invalid, not_found
from microshop_users.domain import (
    MAX_EMAIL_CHARS,
    MAX_NAME_CHARS,
    MAX_PASSWORD_CHARS,
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidName,
    InvalidRefreshToken,
    User,
    UserNotFound,
    WeakPassword,
)
from microshop_users.handlers import Accounts, Sessions, TokenPair
from microshop_users.tokens import JWKS_MAX_AGE

router = APIRouter(tags=["users"])
internal = APIRouter(prefix="/internal/v1", tags=["internal"])

_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749, section 5.1


def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


def get_sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]

# ------------------------------------------------------------------------------------------------- schemas

Email = Annotated[str, Field(min_length=3, max_length=MAX_EMAIL_CHARS, examples=["ada@example.com"])]
Secret = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_CHARS, repr=False)]
RefreshSecret = Annotated[str, Field(min_length=1, max_length=256, repr=False)]


class RegisterIn(BaseModel):
    # Unknown fields (``roles``, ``id``, ...) are refused: a client never chooses its own role.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    email: Email
    password: Secret = Field(description="At least 12 characters, not a commonly used password")
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    email: Email
    password: Secret


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    refresh_token: RefreshSecret


class UserOut(BaseModel):
    id: str
    email: str
    name: str
    roles: list[str]
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        roles = [str(role) for role in user.roles]
        return cls(id=user.id, email=user.email, name=user.name, roles=roles, created_at=user.created_at)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth 2.0 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str

    @classmethod
    def of(cls, pair: TokenPair) -> TokenOut:
        return cls(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


class UserSummaryOut(BaseModel):
    id: str
    email: str
    name: str
    active: bool
    can_order: bool


# ---------------------------------------------------------------------------------------------- error map


def _invalid_credentials() -> ProblemError:
    # One body for an unknown email, a wrong password and an inactive account (no account enumeration).
    return ProblemError(
        401, "Unauthorized", "The email or the password is wrong.", type_="/problems/invalid-credentials"
    )


def _invalid_refresh_token() -> ProblemError:
    return ProblemError(
        401,
        "Unauthorized",
        "The refresh token is invalid, expired or revoked; sign in again.",
        type_="/problems/invalid-refresh-token",
    )


@contextmanager
def _problems() -> Iterator[None]:
    """Map the domain's errors to problem responses (only this module knows HTTP)."""
    try:
        yield
    except InvalidEmail as exc:
        raise invalid("email", str(exc)) from exc
    except InvalidName as exc:
        raise invalid("name", str(exc)) from exc
    except WeakPassword as exc:
        raise invalid("password", str(exc)) from exc
    except EmailTaken as exc:
        raise conflict("An account with this email exists.", type_="/problems/email-taken") from exc
    except InvalidCredentials as exc:
        raise _invalid_credentials() from exc
    except InvalidRefreshToken as exc:
        raise _invalid_refresh_token() from exc
    except UserNotFound as exc:
        raise not_found("User", exc.user_id) from exc


# ------------------------------------------------------------------------------------------------- routes


@router.post(
    "/api/v1/users",
    status_code=201,
    response_model=UserOut,
    responses={409: _PROBLEM, 422: _PROBLEM},
    summary="Register a customer account",
)
async def register(body: RegisterIn, accounts: AccountsDep) -> UserOut:
    with _problems():
        user = await accounts.register(email=body.email, password=body.password, name=body.name)
    return UserOut.of(user)


@router.post("/api/v1/auth/token", response_model=TokenOut, responses={401: _PROBLEM}, summary="Sign in")
async def sign_in(body: SignInIn, sessions: SessionsDep, response: Response) -> TokenOut:
    with _problems():
        pair = await sessions.sign_in(email=body.email, password=body.password)
    response.headers.update(_NO_STORE)
    return TokenOut.of(pair)


@router.post(
    "/api/v1/auth/refresh",
    response_model=TokenOut,
    responses={401: _PROBLEM},
    summary="Exchange a refresh token for new tokens (the old refresh token is spent)",
)
async def refresh(body: RefreshIn, sessions: SessionsDep, response: Response) -> TokenOut:
    with _problems():
        pair = await sessions.refresh(body.refresh_token)
    response.headers.update(_NO_STORE)
    return TokenOut.of(pair)


@router.post("/api/v1/auth/logout", status_code=204, summary="Revoke a refresh token and its family")
async def logout(body: RefreshIn, sessions: SessionsDep) -> Response:
    await sessions.sign_out(body.refresh_token)
    return Response(status_code=204)


@router.get("/api/v1/users/me", response_model=UserOut, responses={401: _PROBLEM, 404: _PROBLEM})
async def me(principal: PrincipalDep, accounts: AccountsDep) -> UserOut:
    with _problems():
        user = await accounts.get(principal.user_id)
    return UserOut.of(user)


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens (JWKS)")
async def jwks(sessions: SessionsDep) -> JSONResponse:
    return JSONResponse(sessions.jwks(), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})


@internal.get("/users/{user_id}", response_model=UserSummaryOut, responses={404: _PROBLEM})
async def lookup(accounts: AccountsDep, user_id: Annotated[str, Path(min_length=1, max_length=64)]) -> UserSummaryOut:
    """An account as other services need it (orders: may this user order?). Never routed by the gateway."""
    with _problems():
        user = await accounts.get(user_id)
    return UserSummaryOut(id=user.id, email=user.email, name=user.name, active=user.active, can_order=user.can_order)
