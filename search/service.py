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
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from camtrace.errors import InputError, NotFoundError, SourceError, TooLargeError
from camtrace.search.people import PeopleSearch
from camtrace.search.records import (
    DetectedPerson,
    SearchResult,
    TrackCrop,
    TrackView,
)
from camtrace.types import SearchFilter

# Photos decoded for a search: formats, and the pixel limit when the caller names none (CAMTRACE_MAX_UPLOAD_PIXELS).
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
DEFAULT_MAX_PIXELS = 40_000_000
# One photo decoded at a time: however many arrive at once, memory holds one photo's pixels.
_DECODE_LOCK = threading.Lock()


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
        return {
            "results": [r.as_dict() for r in self.results],
            "persons": [p.as_dict() for p in self.persons],
            "person": self.person,
        }


class SearchService(PeopleSearch):
    """The query stage the CLI and the HTTP service call: text and photo search and track views here, re-id,
    traces and feedback from PeopleSearch, filters, paging and results from QueryBase."""

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
        # A photo is matched person to person: the anchor head's re-id vector where the model has one.
        vector = model.match_vectors([cv2.cvtColor(query, cv2.COLOR_BGR2RGB)])[0]
        results = self.by_vector(vector, search_filter, limit, offset=offset, min_score=min_score, index=model.match_index)
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
                    DetectedPerson(
                        index=len(found), box=[float(v) for v in box], confidence=round(float(row[4]), 4), crop_jpeg=jpeg.tobytes()
                    )
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
        return self.results(hits)

    # Tracks ------------------------------------------------------------------
    def track(self, track_id: str, *, allowed_cameras: Sequence[str] | None = None) -> TrackView:
        """A track's time span, camera and every indexed crop, in time order."""
        track = self.visible_track(track_id, allowed_cameras)
        crops = [
            TrackCrop(
                point_id=d.point_id,
                crop_key=d.crop_key,
                ts=d.ts,
                frame_index=d.frame_index,
                bbox=[d.x1, d.y1, d.x2, d.y2],
                det_conf=d.det_conf,
            )
            for d in self.services.db.track_detections(track_id)
        ]
        return TrackView(
            track_id=track.id,
            camera_id=track.camera_id,
            video_id=track.video_id,
            ts_start=track.ts_start,
            ts_end=track.ts_end,
            crops=crops,
            best_crop_key=track.best_crop_key,
        )

    def frame_jpeg(self, track_id: str, *, allowed_cameras: Sequence[str] | None = None) -> bytes:
        """The source frame of the track's best crop with its box drawn, decoded from the stored video."""
        from camtrace.search.frames import frame_with_box

        track = self.visible_track(track_id, allowed_cameras)
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


def _area(person: DetectedPerson) -> float:
    x1, y1, x2, y2 = person.box
    return (x2 - x1) * (y2 - y1)
