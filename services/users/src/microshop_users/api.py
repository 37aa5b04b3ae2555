"""HTTP routes of the users service, and the domain errors mapped to problem responses (bodies: schemas.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from microshop_kit.app import PROBLEM_JSON, AdminDep, PrincipalDep
from microshop_kit.errors import ProblemError, conflict, invalid, not_found
from microshop_kit.lean import LeanRoute
from microshop_users.addresses import AddressBook
from microshop_users.admin import Admin
from microshop_users.domain import (
    AddressNotFound,
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidInput,
    InvalidName,
    InvalidRefreshToken,
    TooManyAddresses,
    UserNotFound,
    WeakPassword,
    WrongPassword,
)
from microshop_users.handlers import Accounts, Sessions
from microshop_users.schemas import (
    AddressIn,
    AddressListOut,
    AddressOut,
    AddressPatch,
    AdminUserOut,
    AdminUserPage,
    DeleteAccountIn,
    PasswordChangeIn,
    ProfilePatch,
    RefreshIn,
    RegisterIn,
    SignInIn,
    TokenOut,
    UserOut,
    UserSummaryOut,
)
from microshop_users.throttle import SignInRefused, Verdict
from microshop_users.tokens import JWKS_MAX_AGE

router = APIRouter(tags=["users"])
admin = APIRouter(prefix="/api/v1/admin", tags=["admin"])
internal = APIRouter(prefix="/internal/v1", tags=["internal"], route_class=LeanRoute)

_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749, section 5.1


def _state(name: str) -> Any:
    async def get(request: Request) -> Any:  # async: FastAPI runs a plain def in its thread pool
        return getattr(request.app.state, name)

    return get


AccountsDep = Annotated[Accounts, Depends(_state("accounts"))]
SessionsDep = Annotated[Sessions, Depends(_state("sessions"))]
AddressBookDep = Annotated[AddressBook, Depends(_state("addresses"))]
AdminViewsDep = Annotated[Admin, Depends(_state("admin"))]
UserId = Annotated[str, Path(min_length=1, max_length=64)]
AddressId = Annotated[str, Path(min_length=1, max_length=64)]

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


def _refused(exc: SignInRefused) -> ProblemError:
    """429 for both a delay and a lockout (the client's move is the same: wait Retry-After); the type tells
    them apart. Emails without an account get the very same answers."""
    retry_after = max(1, math.ceil(exc.retry_after))
    headers = {"Retry-After": str(retry_after)}
    if exc.verdict is Verdict.LOCKED:
        detail = "Too many failed sign-ins: this account is locked for a while."
        type_ = "/problems/account-locked"
    else:
        detail = "Too many failed sign-ins: wait before trying again."
        type_ = "/problems/sign-in-throttled"
    return ProblemError(429, "Too Many Requests", detail, type_=type_, headers=headers, retry_after=retry_after)


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
    except InvalidInput as exc:
        raise invalid(exc.field, exc.message) from exc
    except EmailTaken as exc:
        raise conflict("An account with this email exists.", type_="/problems/email-taken") from exc
    except InvalidCredentials as exc:
        raise _invalid_credentials() from exc
    except InvalidRefreshToken as exc:
        raise _invalid_refresh_token() from exc
    except SignInRefused as exc:
        raise _refused(exc) from exc
    except WrongPassword as exc:
        raise ProblemError(403, "Forbidden", "The password is wrong.", type_="/problems/wrong-password") from exc
    except TooManyAddresses as exc:
        raise conflict(str(exc).capitalize() + ".", type_="/problems/too-many-addresses") from exc
    except UserNotFound as exc:
        raise not_found("User", exc.user_id) from exc
    except AddressNotFound as exc:
        raise not_found("Address", exc.address_id) from exc


# ------------------------------------------------------------------------------------ accounts and tokens


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


@router.post("/api/v1/auth/token", response_model=TokenOut, responses={401: _PROBLEM, 429: _PROBLEM}, summary="Sign in")
async def sign_in(body: SignInIn, sessions: SessionsDep, response: Response) -> TokenOut:
    """Throttled per account: after 3 failures each attempt waits 1, 2, 4, ... s (429
    `/problems/sign-in-throttled`), and 10 consecutive failures lock the account for 15 minutes (429
    `/problems/account-locked`); both carry Retry-After and are answered without checking the password."""
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


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens (JWKS)")
async def jwks(sessions: SessionsDep) -> JSONResponse:
    return JSONResponse(sessions.jwks(), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})


# ------------------------------------------------------------------------------------------------ profile


@router.get("/api/v1/users/me", response_model=UserOut, responses={401: _PROBLEM, 404: _PROBLEM})
async def me(principal: PrincipalDep, accounts: AccountsDep) -> UserOut:
    with _problems():
        user = await accounts.get(principal.user_id)
    return UserOut.of(user)


@router.patch("/api/v1/users/me", response_model=UserOut, responses={401: _PROBLEM, 404: _PROBLEM, 422: _PROBLEM})
async def update_me(body: ProfilePatch, principal: PrincipalDep, accounts: AccountsDep) -> UserOut:
    """Change the name, the phone (E.164; null removes it) or the notification preferences."""
    with _problems():
        user = await accounts.update_profile(principal.user_id, body.change())
    return UserOut.of(user)


@router.post(
    "/api/v1/users/me/password",
    status_code=204,
    responses={401: _PROBLEM, 403: _PROBLEM, 422: _PROBLEM, 429: _PROBLEM},
    summary="Change the password; signs out every other session",
)
async def change_password(body: PasswordChangeIn, principal: PrincipalDep, accounts: AccountsDep) -> Response:
    """Every refresh-token family of the account is revoked, except the one of `refresh_token` when the
    request carries this session's own. A wrong `current_password` is 403 and counts as a failed sign-in."""
    with _problems():
        await accounts.change_password(
            principal.user_id,
            current=body.current_password,
            new=body.new_password,
            keep_refresh_token=body.refresh_token,
        )
    return Response(status_code=204)


@router.delete(
    "/api/v1/users/me",
    status_code=204,
    responses={401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM, 429: _PROBLEM},
    summary="Delete the account (password in the body)",
)
async def delete_me(body: DeleteAccountIn, principal: PrincipalDep, accounts: AccountsDep) -> Response:
    """The account is anonymised (its email freed), its addresses deleted, every token revoked, and
    `user.deleted.v1` published. Access tokens already issued expire on their own (at most 15 minutes)."""
    with _problems():
        await accounts.delete(principal.user_id, password=body.password)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- addresses


@router.get("/api/v1/users/me/addresses", response_model=AddressListOut, responses={401: _PROBLEM})
async def list_addresses(principal: PrincipalDep, book: AddressBookDep) -> AddressListOut:
    with _problems():
        addresses = await book.list(principal.user_id)
    return AddressListOut(items=[AddressOut.of(address) for address in addresses])


@router.post(
    "/api/v1/users/me/addresses",
    status_code=201,
    response_model=AddressOut,
    responses={401: _PROBLEM, 409: _PROBLEM, 422: _PROBLEM},
)
async def add_address(body: AddressIn, principal: PrincipalDep, book: AddressBookDep) -> JSONResponse:
    with _problems():
        address = await book.add(principal.user_id, body.fields(), make_default=body.is_default)
    location = f"/api/v1/users/me/addresses/{address.id}"
    return JSONResponse(AddressOut.of(address).model_dump(mode="json"), status_code=201, headers={"Location": location})


@router.get(
    "/api/v1/users/me/addresses/{address_id}", response_model=AddressOut, responses={401: _PROBLEM, 404: _PROBLEM}
)
async def read_address(address_id: AddressId, principal: PrincipalDep, book: AddressBookDep) -> AddressOut:
    with _problems():
        return AddressOut.of(await book.get(principal.user_id, address_id))


@router.patch(
    "/api/v1/users/me/addresses/{address_id}",
    response_model=AddressOut,
    responses={401: _PROBLEM, 404: _PROBLEM, 422: _PROBLEM},
)
async def change_address(
    address_id: AddressId, body: AddressPatch, principal: PrincipalDep, book: AddressBookDep
) -> AddressOut:
    with _problems():
        address = await book.change(principal.user_id, address_id, body.changes(), make_default=body.is_default)
    return AddressOut.of(address)


@router.delete("/api/v1/users/me/addresses/{address_id}", status_code=204, responses={401: _PROBLEM, 404: _PROBLEM})
async def delete_address(address_id: AddressId, principal: PrincipalDep, book: AddressBookDep) -> Response:
    with _problems():
        await book.delete(principal.user_id, address_id)
    return Response(status_code=204)


# -------------------------------------------------------------------------------------------------- admin


@admin.get("/users", response_model=AdminUserPage, responses={401: _PROBLEM, 403: _PROBLEM})
async def admin_list_users(
    _: AdminDep,
    views: AdminViewsDep,
    email: Annotated[str | None, Query(max_length=254, description="Part of the email address")] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AdminUserPage:
    """Accounts, newest first (deleted ones too, anonymised), with their sign-in lockout state."""
    result = await views.page(email_contains=email, page=page, limit=limit)
    return AdminUserPage(items=[AdminUserOut.of(s) for s in result.items], page=page, limit=limit, total=result.total)


@admin.get("/users/{user_id}", response_model=AdminUserOut, responses={401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM})
async def admin_read_user(user_id: UserId, _: AdminDep, views: AdminViewsDep) -> AdminUserOut:
    with _problems():
        return AdminUserOut.of(await views.get(user_id))


@admin.post(
    "/users/{user_id}/unlock", response_model=AdminUserOut, responses={401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM}
)
async def admin_unlock_user(user_id: UserId, principal: AdminDep, views: AdminViewsDep) -> AdminUserOut:
    """Forget the account's failed sign-ins: lifts a lockout (or a delay) at once."""
    with _problems():
        return AdminUserOut.of(await views.unlock(user_id, by=principal.user_id))


# ----------------------------------------------------------------------------------------------- internal


@internal.get("/users/{user_id}", response_model=UserSummaryOut, responses={404: _PROBLEM})
async def lookup(accounts: AccountsDep, user_id: UserId) -> UserSummaryOut:
    """An account as other services need it (orders: may this user order?). Never routed by the gateway.
    A deleted account is 404."""
    with _problems():
        user = await accounts.get(user_id)
    return UserSummaryOut(id=user.id, email=user.email, name=user.name, active=user.active, can_order=user.can_order)
