"""The watchlist: people and descriptions to alert on. Investigators and admins add and remove entries,
operators read them; a camera-limited user sees only the entries that watch nothing outside their cameras."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from camtrace.api.deps import Auditor, allow, auditor, current_user, services_of
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import RowId, WatchEntryIn, WatchEntryOut, WatchListOut
from camtrace.enums import Role
from camtrace.search.watch import WatchService
from camtrace.storage.access import Principal

router = APIRouter(prefix="/api/watchlist", tags=["watchlist"], responses=AUTHENTICATED)


def watch_of(request: Request) -> WatchService:
    """The watchlist stage over the app's search stage, built on first use."""
    state = request.app.state
    if getattr(state, "watch", None) is None:
        state.watch = WatchService(services_of(request), state.search)
    return state.watch


WatchDep = Annotated[WatchService, Depends(watch_of)]


def entry_out(entry) -> WatchEntryOut:
    return WatchEntryOut(**entry.as_dict())


@router.get("")
@allow(Role.OPERATOR)
def watchlist(watch: WatchDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)) -> WatchListOut:
    entries = watch.entries(user.cameras)
    audit("watchlist_view", {}, [str(e.id) for e in entries])
    return WatchListOut(entries=[entry_out(e) for e in entries])


@router.post("", status_code=201, responses=errors(400, 404))
@allow(Role.INVESTIGATOR)
def add_entry(
    body: WatchEntryIn, watch: WatchDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> WatchEntryOut:
    """Watch for the person of a track (and the tracks confirmed as them) or for a description."""
    with audit.change("watch_add", body.model_dump()) as record:
        entry = watch.add(username=user.username, allowed_cameras=user.cameras, **body.model_dump())
        record.result_ids.append(str(entry.id))
        record.detail["cameras"] = list(entry.cameras) if entry.cameras is not None else None
    return entry_out(entry)


@router.delete("/{entry_id}", status_code=204, response_class=Response, responses=errors(404))
@allow(Role.INVESTIGATOR)
def remove_entry(
    entry_id: RowId, watch: WatchDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> Response:
    """Stop watching (the entry's alerts stay)."""
    with audit.change("watch_remove", {"entry_id": entry_id}, [str(entry_id)]):
        watch.remove(entry_id, user.cameras)
    return Response(status_code=204)
