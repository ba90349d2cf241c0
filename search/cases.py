"""Cases: tracks and notes gathered by an investigator, exported as one archive that can be checked later.

``export`` writes a ZIP archive holding ``case.json`` (the case, its notes and each track's camera, times and
files), every stored crop of its tracks, a clip of each track when its video is still stored, and
``manifest.json`` with the SHA-256 of every one of those files; ``manifest.sha256`` holds the manifest's own
hash, which is also printed so it can be kept apart from the archive. ``verify`` recomputes every hash and
names each file that was changed, removed or added.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from camtrace.errors import CamtraceError, InputError, NotFoundError
from camtrace.services import Services
from camtrace.storage.cases import Case, CaseStore

ARCHIVE_FORMAT = "camtrace-case/1"
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe(track_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in track_id)


@dataclass
class ExportReport:
    path: Path
    files: int
    manifest_sha256: str
    missing_clips: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "files": self.files,
            "manifest_sha256": self.manifest_sha256,
            "missing_clips": self.missing_clips,
        }


@dataclass
class VerifyReport:
    ok: bool
    files: int
    problems: list[str]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class CaseService:
    def __init__(self, services: Services, search=None) -> None:
        from camtrace.search.service import SearchService

        self.services = services
        self.search = search or SearchService(services)
        self.store = CaseStore(services.db)

    def _visible(self, case: Case, allowed_cameras: Sequence[str] | None) -> bool:
        if allowed_cameras is None:
            return True
        tracks = self.services.db.tracks_by_ids(case.track_ids)
        return all(t.camera_id in allowed_cameras for t in tracks.values())

    def case(self, case_id: int, allowed_cameras: Sequence[str] | None = None) -> Case:
        """A case; one holding a track on a camera the user may not see is reported like a missing one."""
        case = self.store.case(case_id)
        if not self._visible(case, allowed_cameras):
            raise NotFoundError(f"case {case_id} does not exist; `camtrace case list` shows the cases")
        return case

    def cases(self, allowed_cameras: Sequence[str] | None = None) -> list[Case]:
        return [c for c in self.store.cases() if self._visible(c, allowed_cameras)]

    def add_track(
        self, case_id: int, track_id: str, username: str, note: str = "", allowed_cameras: Sequence[str] | None = None
    ) -> Case:
        self.case(case_id, allowed_cameras)
        self.search.visible_track(track_id, allowed_cameras)  # unknown or not visible: 404
        return self.store.add_item(case_id, "track", username, track_id=track_id, text=note)

    def add_note(self, case_id: int, text: str, username: str, allowed_cameras: Sequence[str] | None = None) -> Case:
        self.case(case_id, allowed_cameras)
        return self.store.add_item(case_id, "note", username, text=text)

    # Export ----------------------------------------------------------------------------
    def export(self, case_id: int, out: Path, allowed_cameras: Sequence[str] | None = None, clips: bool = True) -> ExportReport:
        """Write the case's archive to ``out`` (a new file)."""
        case = self.case(case_id, allowed_cameras)
        out = Path(out)
        if out.exists():
            raise InputError(f"{out} exists already; name a new file for the archive")
        db = self.services.db
        tracks = db.tracks_by_ids(case.track_ids)
        files: dict[str, bytes | Path] = {}
        described = []
        missing: list[str] = []
        for track_id in case.track_ids:
            track = tracks.get(track_id)
            if track is None:
                described.append({"track_id": track_id, "missing": "the track was removed (retention)"})
                continue
            described.append(self._track_files(track, files, missing, clips))
        document = {**case.as_dict(), "tracks": described, "exported_at": time.time()}
        files["case.json"] = json.dumps(document, indent=2, sort_keys=True).encode()
        hashes = {name: sha256(data if isinstance(data, bytes) else data.read_bytes()) for name, data in files.items()}
        manifest = json.dumps(
            {"format": ARCHIVE_FORMAT, "case_id": case.id, "files": dict(sorted(hashes.items()))}, indent=2, sort_keys=True
        ).encode()
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(files.items()):
                archive.writestr(name, data if isinstance(data, bytes) else data.read_bytes())
            archive.writestr(MANIFEST, manifest)
            archive.writestr(MANIFEST_HASH, sha256(manifest) + "  " + MANIFEST + "\n")
        partial.replace(out)
        return ExportReport(out, len(files), sha256(manifest), missing)

    def _track_files(self, track, files: dict[str, bytes | Path], missing: list[str], clips: bool) -> dict:
        """A track's crops (and clip) added to ``files``; what case.json says of it."""
        from camtrace.search.clips import track_clip

        db, crops = self.services.db, self.services.crops
        names = []
        for number, detection in enumerate(db.track_detections(track.id)):
            name = f"crops/{_safe(track.id)}/{number:03d}.jpg"
            try:
                files[name] = crops.get(detection.crop_key)
            except CamtraceError:
                continue
            bbox = [detection.x1, detection.y1, detection.x2, detection.y2]
            names.append({"file": name, "ts": detection.ts, "frame_index": detection.frame_index, "bbox": bbox})
        clip_name = None
        if clips:
            try:
                clip = track_clip(db, self.services.settings.resolved_data_dir / "clips", track)
            except CamtraceError as exc:
                missing.append(f"{track.id}: {exc}")
            else:
                clip_name = f"clips/{_safe(track.id)}.webm"
                files[clip_name] = clip
        return {
            "track_id": track.id,
            "camera_id": track.camera_id,
            "video_id": track.video_id,
            "ts_start": track.ts_start,
            "ts_end": track.ts_end,
            "crops": names,
            "clip": clip_name,
        }


def verify(archive_path: Path, manifest_sha256: str | None = None) -> VerifyReport:
    """Check every file of a case archive against its manifest (and the manifest against ``manifest_sha256``,
    the hash printed at export, or the archive's own manifest.sha256)."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{archive_path} is not a readable case archive ({exc})") from None
    problems: list[str] = []
    with archive:
        names = set(archive.namelist())
        if MANIFEST not in names:
            raise InputError(f"{archive_path} has no {MANIFEST}: not a camtrace case archive")
        manifest_bytes = archive.read(MANIFEST)
        recorded = manifest_sha256 or (archive.read(MANIFEST_HASH).decode().split()[0] if MANIFEST_HASH in names else None)
        if recorded is not None and sha256(manifest_bytes) != recorded:
            problems.append(f"{MANIFEST}: changed (its SHA-256 is not the one recorded at export)")
        try:
            listed = json.loads(manifest_bytes)["files"]
        except (ValueError, KeyError, TypeError):
            return VerifyReport(False, 0, [*problems, f"{MANIFEST}: unreadable"])
        for name, expected in sorted(listed.items()):
            if name not in names:
                problems.append(f"{name}: missing")
            elif sha256(archive.read(name)) != expected:
                problems.append(f"{name}: changed (SHA-256 differs from the manifest)")
        for name in sorted(names - set(listed) - {MANIFEST, MANIFEST_HASH}):
            problems.append(f"{name}: not in the manifest (added after export)")
    return VerifyReport(not problems, len(listed), problems)
