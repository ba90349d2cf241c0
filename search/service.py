"""The query stage: text or photo -> vector -> one result per track; re-identification from a
track, traces across cameras, investigators' feedback, track views and frames.

Every filter goes inside the vector query, the current user's camera limit included
(``allowed_cameras``: None means every camera). A track outside that limit behaves exactly
like a track that does not exist.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from camtrace.search.records import (
    DetectedPerson,
    FeedbackRecord,
    SearchResult,
    Trace,
    TrackCrop,
    TrackView,
)
from camtrace.search.trace import (
    Identity,
    TraceEntry,
    TraceMethod,
    anchored_probabilities,
    build_trace,
    resolve_identity,
)

from camtrace import validation
from camtrace.enums import TraceStatus, Verdict
from camtrace.errors import InputError, NotFoundError, SourceError, TooLargeError
from camtrace.services import Services
from camtrace.types import PointPayload, SearchFilter, TrackHit

VERDICTS = tuple(Verdict)
# Deepest result a caller may page to: a page is served by fetching offset + limit tracks.
MAX_OFFSET = 10_000
# Example vectors per side of a re-id query: a track keeps a few crops, so this bounds only
# identities with many confirmed tracks (evenly sampled then).
MAX_EXAMPLES = 64
# Candidates a trace considers when the caller names no limit (its path and alternatives come from these).
TRACE_CANDIDATES = 40
# Re-id ranks by probability: this many tracks by score (at least) are weighed before a page is cut.
REID_POOL = 100
# A camera id no point carries: the filter of a user allowed no camera at all matches nothing.
NO_CAMERA = ""
# Photos decoded for a search: formats, and the pixel limit when the caller names none (CAMTRACE_MAX_UPLOAD_PIXELS).
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
DEFAULT_MAX_PIXELS = 40_000_000
# One photo decoded at a time: however many arrive at once, memory holds one photo's pixels.
_DECODE_LOCK = threading.Lock()


def parse_time(value: str | None, name: str) -> float | None:
    """ISO-8601 to epoch seconds; a time without a zone is the machine's local time."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{name}: '{value}' is not an ISO time such as 2026-01-31T14:05:00") from None
    return moment.timestamp()


def read_photo(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a photo file to BGR pixels, or fail with a message naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"photo '{path}' does not exist")
    return decode_photo(path.read_bytes(), str(path), max_pixels=max_pixels)


def decode_photo(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded or read photo to BGR pixels; ``name`` is what the error message calls it.

    The size comes from the image's header and is checked before a pixel is decoded, so a small file
    that declares a huge image (a decompression bomb) costs nothing: ``TooLargeError`` names the limit.
    Pillow decodes exactly the declared size, so memory stays near width x height x 3 bytes (twice, for
    the colour conversion).
    """
    from PIL import Image, ImageOps

    unreadable = InputError(f"photo '{name}' is not an image camtrace can read (use a JPEG, PNG or WebP)")
    try:
        with _DECODE_LOCK, _open_photo(data) as photo:
            if photo is None:
                raise unreadable
            width, height = photo.size
            if width * height > max_pixels:
                raise TooLargeError(
                    f"photo '{name}' is {width}x{height} pixels, more than the {max_pixels:,} allowed "
                    "(CAMTRACE_MAX_UPLOAD_PIXELS); scale it down"
                )
            rgb = ImageOps.exif_transpose(photo).convert("RGB")
    except Image.DecompressionBombError:  # Pillow's own guard, on a frame inside the file
        raise TooLargeError(
            f"photo '{name}' has more pixels than the {max_pixels:,} allowed (CAMTRACE_MAX_UPLOAD_PIXELS); scale it down"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise unreadable from None
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def _open_photo(data: bytes):
    """The photo's Pillow image, header read and nothing decoded; a null context when no allowed format fits.

    Goes through Pillow's registry of formats rather than ``Image.open``, which Ultralytics replaces
    with a version that, on an unknown file, tries to load (and may try to install) a HEIF plugin.
    """
    from contextlib import nullcontext

    from PIL import Image

    Image.init()
    for kind in PHOTO_FORMATS:
        factory, accept = Image.OPEN[kind]
        if accept is not None and accept(data[:16]):
            return factory(io.BytesIO(data), None)
    return nullcontext()


def clip_box(image: np.ndarray, box: Sequence[float]) -> tuple[int, int, int, int] | None:
    """A box rounded outwards to whole pixels inside the image; None when nothing is left."""
    height, width = image.shape[:2]
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def largest_person(image: np.ndarray, detections: np.ndarray) -> np.ndarray | None:
    """The crop of the largest detected person, or None when nobody is detected."""
    if detections is None or len(detections) == 0:
        return None
    areas = (detections[:, 2] - detections[:, 0]) * (detections[:, 3] - detections[:, 1])
    box = clip_box(image, detections[int(np.argmax(areas)), :4])
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return image[y1:y2, x1:x2]


@dataclass
class PhotoSearch:
    """A photo search: the results, every person found on the photo, and the one searched for
    (None when the photo was searched as a whole: a crop, or nobody detected)."""

    results: list[SearchResult]
    persons: list[DetectedPerson] = field(default_factory=list)
    person: int | None = None

    def as_dict(self) -> dict:
        return {"results": [r.as_dict() for r in self.results], "persons": [p.as_dict() for p in self.persons],
                "person": self.person}


class SearchService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._evidence = None

    @property
    def evidence(self):
        """The identity evidence (same-person calibration and camera links) of the model in service."""
        if self._evidence is None:
            from camtrace.search.evidence_service import EvidenceService

            self._evidence = EvidenceService(self.services)
        return self._evidence

    @property
    def max_results(self) -> int:
        return int(self.services.settings.search_max_results)

    # Filters and paging ------------------------------------------------------
    def make_filter(
        self,
        cameras: Sequence[str] = (),
        since: str | float | None = None,
        until: str | float | None = None,
        *,
        allowed_cameras: Sequence[str] | None = None,
    ) -> SearchFilter:
        """Validate filters against what is indexed, so a typo is an error and not an empty answer.

        The user's camera limit becomes part of the filter: with no camera named, the search covers
        the allowed ones; a named camera outside the limit is reported like an unknown one.
        """
        cameras = tuple(dict.fromkeys(cameras))
        if cameras:
            known = set(self.services.db.camera_ids())
            if allowed_cameras is not None:
                known &= set(allowed_cameras)
            unknown = [camera for camera in cameras if camera not in known]
            if unknown:
                listed = ", ".join(sorted(known)) or "none yet"
                raise NotFoundError(f"unknown camera(s) {', '.join(unknown)}; known cameras: {listed}")
        elif allowed_cameras is not None:
            cameras = tuple(sorted(set(allowed_cameras))) or (NO_CAMERA,)
        since_ts = parse_time(since, "since") if isinstance(since, str) else validation.moment(since, "since")
        until_ts = parse_time(until, "until") if isinstance(until, str) else validation.moment(until, "until")
        if since_ts is not None and until_ts is not None and since_ts > until_ts:
            raise InputError("since is after until")
        return SearchFilter(camera_ids=cameras, since=since_ts, until=until_ts)

    def check_page(self, limit: int, offset: int = 0) -> None:
        if limit < 1:
            raise InputError("limit must be at least 1")
        if limit > self.max_results:
            raise InputError(
                f"limit {limit} is more than the maximum of {self.max_results} results per page "
                "(CAMTRACE_SEARCH_MAX_RESULTS); ask for further pages with offset"
            )
        if offset < 0 or offset > MAX_OFFSET:
            raise InputError(f"offset {offset} is outside 0..{MAX_OFFSET}; narrow the search with filters instead")

    # Text and photo search ---------------------------------------------------
    def by_text(
        self,
        text: str,
        search_filter: SearchFilter | None = None,
        limit: int = 10,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        if not text.strip():
            raise InputError("the search text is empty; describe the person, e.g. 'man, grey hoodie, blue jeans'")
        self.check_page(limit, offset)
        model = self.services.model()  # one model embeds the query and owns the index searched
        vector = model.encoder.encode_texts([text])[0]
        return self.by_vector(vector, search_filter, limit, offset=offset, min_score=min_score, index=model.index)

    def by_image(
        self,
        image_bgr: np.ndarray,
        search_filter: SearchFilter | None = None,
        limit: int = 10,
        *,
        offset: int = 0,
        min_score: float | None = None,
        detect: bool = True,
        person: int | None = None,
    ) -> list[SearchResult]:
        """Search with a photo; a full frame is reduced to one detected person (``person``, an index
        into ``persons()``; the largest by default). ``detect=False``: the photo is a crop already."""
        return self.by_photo(
            image_bgr, search_filter, limit, offset=offset, min_score=min_score, detect=detect, person=person
        ).results

    def by_photo(
        self,
        image_bgr: np.ndarray,
        search_filter: SearchFilter | None = None,
        limit: int = 10,
        *,
        offset: int = 0,
        min_score: float | None = None,
        detect: bool = True,
        person: int | None = None,
    ) -> PhotoSearch:
        """``by_image`` that also returns every person found, so a caller can offer to pick another."""
        self.check_page(limit, offset)
        query = image_bgr
        persons: list[DetectedPerson] = []
        chosen: int | None = None
        if detect:
            persons = self.persons(image_bgr)
            if person is not None and not 0 <= person < len(persons):
                raise InputError(
                    f"person {person} is not on the photo: {len(persons)} person(s) were detected"
                    + (f", numbered 0 to {len(persons) - 1}" if persons else "; search the photo as a crop instead")
                )
            if persons:
                chosen = person if person is not None else max(persons, key=_area).index
                x1, y1, x2, y2 = (int(v) for v in persons[chosen].box)  # already whole pixels inside the photo
                query = image_bgr[y1:y2, x1:x2]
        elif person is not None:
            raise InputError("a person can only be picked on a photo searched with detection (detect=True)")
        model = self.services.model()
        vector = model.encoder.encode_images([cv2.cvtColor(query, cv2.COLOR_BGR2RGB)])[0]
        results = self.by_vector(vector, search_filter, limit, offset=offset, min_score=min_score, index=model.index)
        return PhotoSearch(results=results, persons=persons, person=chosen)

    def persons(self, image_bgr: np.ndarray) -> list[DetectedPerson]:
        """Every person the detector finds on a photo, left to right, each with its crop as JPEG."""
        detections = self.services.detector.detect([image_bgr])[0]
        found = []
        for row in sorted(detections, key=lambda r: (float(r[0]), float(r[1]))):
            box = clip_box(image_bgr, row[:4])
            if box is None:
                continue
            x1, y1, x2, y2 = box
            ok, jpeg = cv2.imencode(".jpg", image_bgr[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                found.append(
                    DetectedPerson(index=len(found), box=[float(v) for v in box], confidence=round(float(row[4]), 4),
                                   crop_jpeg=jpeg.tobytes())
                )
        return found

    def by_vector(
        self,
        vector: np.ndarray,
        search_filter: SearchFilter | None,
        limit: int,
        *,
        offset: int = 0,
        min_score: float | None = None,
        index=None,
    ) -> list[SearchResult]:
        """Search ``index`` (that of the model which made ``vector``; default: the active model's)."""
        self.check_page(limit, offset)
        index = index or self.services.index
        hits = index.search(vector, search_filter, limit, offset=offset, min_score=min_score)
        return self._results(hits)

    # Tracks ------------------------------------------------------------------
    def _track(self, track_id: str, allowed_cameras: Sequence[str] | None):
        track = self.services.db.tracks_by_ids([track_id]).get(track_id)
        if track is None or (allowed_cameras is not None and track.camera_id not in allowed_cameras):
            raise NotFoundError(f"track {track_id!r} does not exist; search results and traces name the track ids")
        return track

    def track(self, track_id: str, *, allowed_cameras: Sequence[str] | None = None) -> TrackView:
        """A track's time span, camera and every indexed crop, in time order."""
        track = self._track(track_id, allowed_cameras)
        crops = [
            TrackCrop(point_id=d.point_id, crop_key=d.crop_key, ts=d.ts, frame_index=d.frame_index,
                      bbox=[d.x1, d.y1, d.x2, d.y2], det_conf=d.det_conf)
            for d in self.services.db.track_detections(track_id)
        ]
        return TrackView(track_id=track.id, camera_id=track.camera_id, video_id=track.video_id,
                         ts_start=track.ts_start, ts_end=track.ts_end, crops=crops, best_crop_key=track.best_crop_key)

    def frame_jpeg(self, track_id: str, *, allowed_cameras: Sequence[str] | None = None) -> bytes:
        """The source frame of the track's best crop with its box drawn, decoded from the stored video."""
        from camtrace.search.frames import frame_with_box

        track = self._track(track_id, allowed_cameras)
        detections = self.services.db.track_detections(track_id)
        if not detections:
            raise NotFoundError(f"track {track_id!r} has no stored crops left (retention removed them)")
        best = next((d for d in detections if d.crop_key == track.best_crop_key), None)
        best = best or max(detections, key=lambda d: (d.quality, d.det_conf))
        video = self.services.db.get_video(best.video_id)
        try:
            return frame_with_box(video.source, best.frame_index, (best.x1, best.y1, best.x2, best.y2))
        except SourceError as exc:
            raise SourceError(
                f"frame of track {track_id!r}: {exc}",
                public=f"the frame of track {track_id!r} cannot be read from its video (moved, replaced or deleted?)",
            ) from exc

    def crop_camera(self, crop_key: str) -> str:
        """The camera a stored crop belongs to (its key ends with its point id)."""
        detection = self.services.db.get_detection(PurePosixPath(crop_key).stem) if crop_key else None
        if detection is None or detection.crop_key != crop_key:
            raise NotFoundError(f"crop {crop_key!r} does not exist")
        return detection.camera_id

    # Re-identification -------------------------------------------------------
    def identity(self, track_id: str) -> Identity:
        """The tracks confirmed as the same person as ``track_id`` and those rejected, from feedback."""
        return resolve_identity(track_id, self.services.db.feedback_for)

    def reid(
        self,
        track_id: str,
        *,
        limit: int = 20,
        offset: int = 0,
        same_camera: bool = False,
        min_probability: float | None = None,
        allowed_cameras: Sequence[str] | None = None,
    ) -> list[SearchResult]:
        """Find the person of a track elsewhere: all the track's crops (and those of the tracks
        confirmed as them) are the positive examples, crops of rejected tracks the negative ones.
        Never the track itself nor a track already decided; other cameras unless ``same_camera``.

        Ranked by the evidence that it is the same person (appearance, cameras and the time from the track or a
        confirmed sighting under the learned camera links), each with its probability of being them (which also
        counts the candidates competing with it); ``min_probability`` leaves out the less likely.
        """
        self.check_page(limit, offset)
        _check_probability(min_probability)
        seed = self._track(track_id, allowed_cameras)
        identity = self.identity(track_id)
        model = self.services.model()
        pool = max(REID_POOL, 2 * (offset + limit))
        results = self._reid(model, seed, identity, min(pool, MAX_OFFSET), same_camera, allowed_cameras)
        if not results:
            return []
        certain = self._certain_entries(seed, identity, allowed_cameras)
        entries = [_entry(result, TraceStatus.CANDIDATE) for result in results]
        probability = self._pair_probability(model, TraceMethod.LINKS)
        # Ranked by each candidate's own evidence; the probability shown also counts its rivals (one person is at
        # most one of the tracks a camera shows in a stretch of time), which would bury a person seen on a busy
        # camera under a stranger alone on a quiet one.
        evidence = anchored_probabilities(certain, entries, probability, rounds=1, share=False)
        likely = anchored_probabilities(certain, entries, probability, rounds=1)
        for result in results:
            result.probability = round(likely[result.track_id], 4)
        results.sort(key=lambda r: (-evidence[r.track_id], -r.score, r.track_id))
        if min_probability is not None:
            results = [r for r in results if (r.probability or 0.0) >= min_probability]
        return results[offset : offset + limit]

    def _reid(self, model, seed, identity: Identity, limit: int, same_camera: bool,
              allowed_cameras: Sequence[str] | None) -> list[SearchResult]:
        index = model.index
        cameras: tuple[str, ...] = ()
        if allowed_cameras is not None:
            cameras = tuple(sorted(set(allowed_cameras))) or (NO_CAMERA,)
        search_filter = SearchFilter(
            camera_ids=cameras,
            exclude_camera_ids=() if same_camera else (seed.camera_id,),
            exclude_track_ids=identity.decided,
        )
        with index.session():
            positives = self._examples(index, (seed.id, *identity.confirmed))
            if not positives:
                return []  # the track's vectors are gone (retention): nothing to compare with
            negatives = self._examples(index, identity.rejected)
            hits = index.recommend(positives, negatives, search_filter, limit)
        return self._results(hits)

    def _certain_entries(self, seed, identity: Identity, allowed_cameras: Sequence[str] | None) -> list[TraceEntry]:
        confirmed = self.services.db.tracks_by_ids(identity.confirmed)
        return [
            TraceEntry(t.id, t.camera_id, t.ts_start, t.ts_end, 1.0, TraceStatus.SEED if t.id == seed.id else TraceStatus.CONFIRMED,
                       t.best_crop_key)
            for t in (seed, *(confirmed[i] for i in identity.confirmed if i in confirmed))
            if allowed_cameras is None or t.camera_id in allowed_cameras
        ]

    def _pair_probability(self, model, method: TraceMethod):
        """P(same person) of a candidate given a neighbouring track: ``(earlier, later, score) -> p``."""
        if method == TraceMethod.SCORE:
            return lambda earlier, later, score: score
        evidence = self.evidence.current(model)
        if method == TraceMethod.APPEARANCE:
            return lambda earlier, later, score: evidence.appearance_probability(
                score, earlier.camera_id == later.camera_id)
        return lambda earlier, later, score: evidence.probability(
            score, earlier.camera_id, later.camera_id, later.ts_start - earlier.ts_end)

    @staticmethod
    def _examples(index, track_ids: Sequence[str]) -> list[np.ndarray]:
        vectors = [point.vector for track in track_ids for point in index.track_points(track)]
        if len(vectors) > MAX_EXAMPLES:
            keep = np.linspace(0, len(vectors) - 1, MAX_EXAMPLES).round().astype(int)
            vectors = [vectors[i] for i in keep]
        return vectors

    # Traces and feedback -----------------------------------------------------
    def trace(
        self,
        track_id: str,
        *,
        allowed_cameras: Sequence[str] | None = None,
        min_probability: float | None = None,
        limit: int | None = None,
        method: TraceMethod = TraceMethod.PATH,
    ) -> Trace:
        """The seed's person's path: through the seed and the tracks confirmed as them, the most probable
        time-consistent chain of the best ``limit`` undecided candidates (each step at ``min_probability``,
        CAMTRACE_TRACE_MIN_SCORE, or more), the other candidates as alternatives. ``method`` exists to
        measure what each part of the evidence adds (camtrace.search.trace)."""
        limit = TRACE_CANDIDATES if limit is None else limit
        self.check_page(limit)
        _check_probability(min_probability)
        threshold = float(self.services.settings.trace_min_score if min_probability is None else min_probability)
        seed = self._track(track_id, allowed_cameras)
        identity = self.identity(track_id)
        model = self.services.model()
        certain = self._certain_entries(seed, identity, allowed_cameras)
        found = self._reid(model, seed, identity, limit, True, allowed_cameras)
        candidates = [_entry(r, TraceStatus.CANDIDATE) for r in found]
        evidence = self.evidence.current(model) if method != TraceMethod.SCORE else None

        def expected(camera_from: str, camera_to: str):
            link = evidence.link(camera_from, camera_to) if evidence is not None else None
            return None if link is None else (link.transit_seconds, link.spread_seconds)

        def transit(earlier: TraceEntry, later: TraceEntry) -> float:
            return evidence.transit_ratio(earlier.camera_id, later.camera_id, later.ts_start - earlier.ts_end)

        return build_trace(seed.id, certain, candidates, self._pair_probability(model, method), threshold, method,
                           expected, transit if evidence is not None else None)

    def feedback(
        self,
        track_id: str,
        candidate_track_id: str,
        verdict: str,
        *,
        user: str,
        allowed_cameras: Sequence[str] | None = None,
    ) -> FeedbackRecord:
        """Record that two tracks show the same person, or different people; the newest verdict
        on a pair replaces the older. Re-id and traces use it at once; training reads it later."""
        if verdict not in VERDICTS:
            raise InputError(f"verdict {verdict!r} is not one of: same, different")
        if track_id == candidate_track_id:
            raise InputError(f"feedback needs two different tracks; {track_id!r} was given as both")
        if not user or not str(user).strip():
            raise InputError("feedback needs the name of the user who gives it")
        self._track(track_id, allowed_cameras)
        self._track(candidate_track_id, allowed_cameras)
        row = self.services.db.add_feedback(track_id, candidate_track_id, verdict, str(user))
        return FeedbackRecord(id=int(row.id), track_id=row.track_id, candidate_track_id=row.candidate_track_id,
                              verdict=row.verdict, username=row.username, created_at=row.created_at)

    # Results -----------------------------------------------------------------
    def _results(self, hits: list[TrackHit]) -> list[SearchResult]:
        tracks = self.services.db.tracks_by_ids([hit.track_id for hit in hits])
        results = []
        for hit in hits:
            payload = PointPayload.from_dict(hit.payload)
            track = tracks.get(hit.track_id)
            results.append(
                SearchResult(
                    track_id=hit.track_id,
                    camera_id=payload.camera_id,
                    video_id=payload.video_id,
                    score=round(float(hit.score), 6),
                    ts_start=track.ts_start if track else payload.ts,
                    ts_end=track.ts_end if track else payload.ts,
                    crop=str(self.services.crops.path(payload.crop_key)),
                    crop_key=payload.crop_key,
                    point_id=hit.point_id,
                    frame_index=payload.frame_index,
                    ts=payload.ts,
                    bbox=list(payload.bbox),
                )
            )
        return results


def _entry(result: SearchResult, status: str) -> TraceEntry:
    return TraceEntry(result.track_id, result.camera_id, result.ts_start, result.ts_end, result.score, status,
                      result.crop_key)


def _check_probability(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise InputError(f"min_probability {value} is not a probability between 0 and 1")


def _area(person: DetectedPerson) -> float:
    x1, y1, x2, y2 = person.box
    return (x2 - x1) * (y2 - y1)

