"""Camera links learned from the site's footage: which cameras people pass between, and how long it takes."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from camtrace.api.deps import Auditor, SearchDep, allow, auditor
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import LinkOut, LinksOut
from camtrace.enums import Role

router = APIRouter(prefix="/api/links", tags=["links"], responses=AUTHENTICATED)


def links_out(search) -> LinksOut:
    evidence = search.evidence
    current = evidence.current()
    stored = evidence.stored()
    return LinksOut(
        links=[LinkOut(**vars(link)) for link in current.links()],
        tracks=current.tracks,
        verdicts=current.verdicts,
        learned_at=stored.learned_at if stored else None,
    )


@router.get("")
@allow(Role.ADMIN)
def links(search: SearchDep) -> LinksOut:
    """The learned camera graph of the model in service (learned first if it never was)."""
    return links_out(search)


@router.post("/learn", responses=errors(503))
@allow(Role.ADMIN)
def learn_links(search: SearchDep, audit: Auditor = Depends(auditor)) -> LinksOut:
    """Relearn the camera links and the same-person calibration from the footage now."""
    with audit.change("links_learn") as entry:  # the new evidence is kept only with its audit row
        report = search.evidence.learn()
        entry.detail.update(tracks=report.tracks, verdicts=report.verdicts, links=report.links)
    return links_out(search)
