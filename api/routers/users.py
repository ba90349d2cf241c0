"""Users (admins): list, create (with a first API token, shown once) and remove."""

from __future__ import annotations

from camtrace.api.deps import Auditor, ForbiddenError, access_of, allow, auditor, current_user
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import UserCreatedOut, UserIn, UserOut
from camtrace.storage.access import Principal
from fastapi import APIRouter, Depends, Request, Response

router = APIRouter(prefix="/api/users", tags=["users"], responses=AUTHENTICATED)


@router.get("")
@allow("admin")
def users(request: Request) -> list[UserOut]:
    return [UserOut(**user.as_dict(), created_at=created) for user, created in access_of(request).users()]


@router.post("", status_code=201, responses=errors(400))
@allow("admin")
def add_user(body: UserIn, request: Request, audit: Auditor = Depends(auditor)) -> UserCreatedOut:
    access = access_of(request)
    token = access.add_user(body.username, body.role, body.cameras, body.password)
    audit("user_add", {"username": body.username, "role": body.role, "cameras": body.cameras}, [body.username])
    user = access.get_user(body.username)
    created = next(created for u, created in access.users() if u.username == body.username)
    return UserCreatedOut(**user.as_dict(), created_at=created, token=token)


@router.delete("/{username}", status_code=204, response_class=Response, responses=errors(404))
@allow("admin")
def remove_user(
    username: str, request: Request, me: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> Response:
    if username == me.username:
        raise ForbiddenError("admins cannot remove themselves; another admin can")
    access_of(request).remove_user(username)
    audit("user_remove", {"username": username}, [username])
    return Response(status_code=204)
