"""Users (admins): list, create (with a first API token, shown once) and remove; their tokens: list, add, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from camtrace.api.deps import AccessDep, Auditor, ForbiddenError, allow, auditor, current_user
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import TokenCreatedOut, TokenIn, TokenOut, UserCreatedOut, UserIn, UserOut
from camtrace.enums import Role
from camtrace.storage.access import Principal

router = APIRouter(prefix="/api/users", tags=["users"], responses=AUTHENTICATED)


@router.get("")
@allow(Role.ADMIN)
def users(access: AccessDep) -> list[UserOut]:
    return [UserOut(**user.as_dict(), created_at=created) for user, created in access.users()]


@router.post("", status_code=201, responses=errors(400))
@allow(Role.ADMIN)
def add_user(body: UserIn, access: AccessDep, audit: Auditor = Depends(auditor)) -> UserCreatedOut:
    """Create a user; the answer holds its first API token, shown this once."""
    detail = {"username": body.username, "role": body.role, "cameras": body.cameras, "token_expires": body.token_expires}
    with audit.change("user_add", detail, [body.username]) as entry:
        token = access.add_user(body.username, body.role, body.cameras, body.password, token_expires_at=body.token_expires)
        entry.detail["token_id"] = token.id
    user = access.get_user(body.username)
    return UserCreatedOut(**user.as_dict(), created_at=token.created_at, token=token.token, token_id=token.id)


@router.delete("/{username}", status_code=204, response_class=Response, responses=errors(404))
@allow(Role.ADMIN)
def remove_user(
    username: str, access: AccessDep, me: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> Response:
    if username == me.username:
        raise ForbiddenError("admins cannot remove themselves; another admin can")
    with audit.change("user_remove", {"username": username}, [username]):
        access.remove_user(username)
    return Response(status_code=204)


@router.get("/{username}/tokens", responses=errors(404))
@allow(Role.ADMIN)
def tokens(username: str, access: AccessDep) -> list[TokenOut]:
    """A user's API tokens by id, with their expiry (the secrets are never shown again)."""
    return [TokenOut(**info.as_dict()) for info in access.tokens(username)]


@router.post("/{username}/tokens", status_code=201, responses=errors(400, 404))
@allow(Role.ADMIN)
def create_token(
    username: str, access: AccessDep, body: TokenIn | None = None, audit: Auditor = Depends(auditor)
) -> TokenCreatedOut:
    """Another API token for the user, valid until ``expires`` (never, if null); shown this once."""
    expires = (body or TokenIn()).expires
    with audit.change("token_create", {"username": username, "expires_at": expires}, [username]) as entry:
        token = access.create_token(username, expires)
        entry.detail["token_id"] = token.id
    return TokenCreatedOut(**token.as_dict())
