"""Synthetic surveillance footage with ground truth, for tests and demos.

``generate_footage`` draws simple person-like figures (head, torso in the top
colour, legs in the bottom colour, optionally a backpack, bag or hat) walking
over a textured background, writes one MP4 per camera and a
``ground_truth.json`` that says who is where in every frame. The same
identities walk past several cameras at known times, so cross-camera search
can be checked. Everything is drawn from one seed: the same seed gives the
same ground truth and the same pixels.

The background is textured on purpose: crops of flat colour would fail the
sharpness filter of crop selection.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from camtrace.errors import CamtraceError, SourceError

GROUND_TRUTH_FILE = "ground_truth.json"

# Colour names used in descriptions, with BGR values far enough apart to tell apart after MP4 compression.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (40, 40, 210),
    "blue": (200, 80, 30),
    "green": (60, 160, 40),
    "yellow": (40, 220, 235),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
    "grey": (135, 135, 135),
    "orange": (20, 130, 245),
    "purple": (150, 40, 130),
    "pink": (190, 150, 250),
    "brown": (40, 75, 120),
}
BOTTOMS = ("trousers", "shorts", "skirt")
ITEMS = ("backpack", "bag", "hat")
SKIN = ((80, 130, 190), (110, 160, 220), (60, 95, 140), (150, 190, 235))
# A figure hidden beyond this share of its silhouette gets no ground-truth box (nothing to detect).
MIN_VISIBLE_SHARE = 0.15


@dataclass(frozen=True)
class Identity:
    """One synthetic person: what they wear, and the description an operator would type."""

    id: str
    top: str
    bottom: str
    bottom_kind: str
    item: str | None
    item_colour: str | None
    height_scale: float
    skin: int

    @property
    def description(self) -> str:
        parts = [f"{self.top} top", f"{self.bottom} {self.bottom_kind}"]
        if self.item is not None:
            parts.append(f"{self.item_colour} {self.item}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Appearance:
    """One walk of one identity across one camera's view (frames inclusive)."""

    identity: str
    camera: str
    frame_start: int
    frame_end: int
    ts_start: float
    ts_end: float
    x_start: float
    x_end: float
    feet_y: float
    feet_y_end: float | None = None  # a diagonal walk ends at another depth (None: the same as ``feet_y``)

    def position(self, index: int) -> tuple[float, float]:
        """The figure's centre x and feet y in frame ``index`` (linear between the start and the end)."""
        progress = (index - self.frame_start) / max(1, self.frame_end - self.frame_start)
        feet_end = self.feet_y if self.feet_y_end is None else self.feet_y_end
        return (self.x_start + (self.x_end - self.x_start) * progress, self.feet_y + (feet_end - self.feet_y) * progress)


@dataclass(frozen=True)
class GroundTruthBox:
    """Where an identity is drawn in one frame: the tight box of its silhouette in source pixels (with
    occlusion, of its visible part; ``visible`` is the share of its in-frame silhouette left uncovered)."""

    camera: str
    frame_index: int
    ts: float
    identity: str
    box: tuple[float, float, float, float]
    visible: float = 1.0


@dataclass
class Footage:
    """Generated videos and their ground truth."""

    root: Path
    videos: dict[str, Path]
    start_ts: dict[str, float]  # per camera: epoch seconds of frame 0
    fps: float
    size: tuple[int, int]
    n_frames: int
    identities: dict[str, Identity]
    appearances: list[Appearance]
    boxes: list[GroundTruthBox]
    ground_truth_path: Path
    seed: int = 0
    scene_seed: int | None = None  # seeds the cameras' empty scenes (None: ``seed``)
    # Scene objects drawn in front of everyone (pillars), per camera: part of the empty scene.
    occluders: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.descriptions = {key: ident.description for key, ident in self.identities.items()}

    @property
    def start_times(self) -> dict[str, float]:
        return self.start_ts

    def background(self, camera: str) -> np.ndarray:
        """The empty scene of ``camera`` (BGR): what a frame with nobody in it shows."""
        k = list(self.videos).index(camera)
        scene_seed = self.seed if self.scene_seed is None else self.scene_seed
        scene = scene_background(np.random.default_rng([scene_seed, k]), self.size)
        draw_occluders(scene, self.occluders.get(camera, ()))
        return scene

    def boxes_in(self, camera: str, frame_index: int) -> list[GroundTruthBox]:
        return [b for b in self.boxes if b.camera == camera and b.frame_index == frame_index]

    def cameras_of(self, identity: str) -> list[str]:
        """Cameras an identity appears on, in the order visited."""
        seen: list[str] = []
        for app in sorted(self.appearances, key=lambda a: a.ts_start):
            if app.identity == identity and app.camera not in seen:
                seen.append(app.camera)
        return seen


def generate_footage(
    out_dir: str | Path,
    cameras: int = 3,
    identities: int = 6,
    seconds: float = 12.0,
    fps: float = 10,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
    start_ts: float = 1_767_225_600.0,
    *,
    idle_seconds: float = 0.0,
    identity_prefix: str = "p",
    exclude_descriptions: Collection[str] = (),
    background_seed: int | None = None,
) -> Footage:
    """Write ``cameras`` MP4 files plus ``ground_truth.json`` into ``out_dir`` and return what was written.

    All cameras record the same interval starting at ``start_ts``; each file's
    modification time is set to its start time, which is what ``VideoSource``
    uses when no start time is given. ``idle_seconds`` > 0 adds stretches of
    empty scene that long before, between and after the walks (the recording
    grows by them; the walks stay as they are).

    Two footages of one world with disjoint people (a training and a test set)
    share ``background_seed`` (the cameras' scenes; default ``seed``) and differ
    in ``seed``, ``identity_prefix`` (ids are prefix + number) and
    ``exclude_descriptions`` (clothing combinations the new people must not wear).
    """
    if cameras < 1 or identities < 1:
        raise ValueError("need at least one camera and one identity")
    width, height = size
    if width < 160 or height < 120:
        raise ValueError(f"frame size {size} is too small for the figures; use at least 160x120")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if idle_seconds < 0:
        raise ValueError("idle_seconds must not be negative")
    n_frames = int(round(seconds * fps))
    idle_frames = int(round(idle_seconds * fps))
    camera_ids = [f"cam{k + 1}" for k in range(cameras)]

    people = make_identities(rng, identities, identity_prefix, frozenset(exclude_descriptions))
    appearances = _make_schedule(rng, people, camera_ids, n_frames, fps, start_ts, size, idle_frames)
    n_frames += idle_frames * (min(2, len(camera_ids)) + 1)
    scene_seed = seed if background_seed is None else background_seed
    return write_footage(
        out,
        camera_ids,
        people,
        appearances,
        n_frames=n_frames,
        fps=fps,
        size=size,
        start_ts=start_ts,
        seed=seed,
        scene_seed=scene_seed,
    )


def write_footage(
    out: Path,
    camera_ids: list[str],
    people: list[Identity],
    appearances: list[Appearance],
    *,
    n_frames: int,
    fps: float,
    size: tuple[int, int],
    start_ts: float,
    seed: int,
    scene_seed: int,
    occluders: dict[str, list[tuple[int, int, int, int]]] | None = None,
    visible_boxes: bool = False,
    extra: dict | None = None,
) -> Footage:
    """Render every camera's video and write ``ground_truth.json`` (plus ``extra`` keys) into ``out``.

    ``visible_boxes``: ground-truth boxes cover only what is visible (figures in front and the
    ``occluders`` hide the rest) and nearly hidden figures get no box; otherwise a box is the whole
    silhouette.
    """
    width, height = size
    occluders = occluders or {}
    videos: dict[str, Path] = {}
    boxes: list[GroundTruthBox] = []
    for k, cam in enumerate(camera_ids):
        scene = scene_background(np.random.default_rng([scene_seed, k]), size)
        path = out / f"{cam}.mp4"
        on_cam = [a for a in appearances if a.camera == cam]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise CamtraceError(f"OpenCV cannot write MP4 (mp4v) to {path}; check the folder is writable")
        try:
            for index in range(n_frames):
                frame, frame_boxes = render_frame(
                    scene, on_cam, people, index, fps, start_ts, cam, occluders.get(cam, ()), visible_boxes
                )
                writer.write(frame)
                boxes.extend(frame_boxes)
        finally:
            writer.release()
        _check_readable(path, n_frames)
        os.utime(path, (start_ts, start_ts))
        videos[cam] = path

    footage = Footage(
        root=out,
        videos=videos,
        start_ts={cam: float(start_ts) for cam in camera_ids},
        fps=float(fps),
        size=(width, height),
        n_frames=n_frames,
        identities={p.id: p for p in people},
        appearances=appearances,
        boxes=boxes,
        ground_truth_path=out / GROUND_TRUTH_FILE,
        seed=seed,
        scene_seed=scene_seed,
        occluders={cam: list(rects) for cam, rects in occluders.items() if rects},
    )
    footage.ground_truth_path.write_text(json.dumps(ground_truth_dict(footage) | (extra or {}), indent=1))
    return footage


def person_crops(
    count: int,
    seed: int = 0,
    heights: tuple[int, int] = (40, 200),
    min_width: int = 3,
    background_max: int = 60,
) -> list[np.ndarray]:
    """RGB crops shaped like detector output: tall, a coloured torso and legs on a noisy background.

    Heights are drawn from ``[heights[0], heights[1])`` and widths are 0.3-0.6 of
    the height (at least ``min_width``); deterministic from ``seed``.
    """
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        h = int(rng.integers(*heights))
        w = max(min_width, int(h * rng.uniform(0.3, 0.6)))
        crop = rng.integers(0, background_max, (h, w, 3), dtype=np.uint8)
        crop[h // 5 : h // 2, w // 5 : 4 * w // 5] = rng.integers(0, 256, 3, dtype=np.uint8)
        crop[h // 2 :, w // 4 : 3 * w // 4] = rng.integers(0, 256, 3, dtype=np.uint8)
        crops.append(crop)
    return crops


class FigureDetector:
    """Finds the synthetic figures by their difference from the camera's empty scene.

    A stand-in for a trained person detector on synthetic footage only (random
    test weights find no people): boxes where people are, none in an empty
    scene. Same interface as ``PersonDetector`` (``detect``, ``batch_size``);
    ``calls`` and ``frames`` count its use.
    """

    def __init__(self, background_bgr: np.ndarray, batch_size: int = 16, min_height: int = 20) -> None:
        self.background = background_bgr.astype(np.int16)
        self.batch_size = batch_size
        self.min_height = min_height
        self.calls = 0
        self.frames = 0

    def load(self) -> None:
        """Nothing to load (the interface of a detector)."""

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        self.frames += len(images)
        return [self._boxes(image) for image in images]

    def _boxes(self, image: np.ndarray) -> np.ndarray:
        diff = np.abs(image.astype(np.int16) - self.background).max(axis=2)
        mask = cv2.morphologyEx((diff > 45).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        rows = [[x, y, x + w, y + h, 0.9, 0.0] for x, y, w, h, _area in stats[1:count].tolist() if h >= self.min_height and w >= 4]
        return np.asarray(rows, np.float32).reshape(-1, 6)


def identity_views(
    identities: int, views: int, seed: int = 0, heights: tuple[int, int] = (64, 200), jitter_max: int = 40
) -> tuple[list[np.ndarray], list[int]]:
    """``identities`` x ``views`` RGB crops drawn like ``person_crops``, each identity keeping its clothing colours.

    Views differ in size, proportions, background and a little colour noise, so
    image-to-image retrieval has right and wrong answers. Returns the crops and
    their identity labels, deterministic from ``seed``.
    """
    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    labels: list[int] = []
    for identity in range(identities):
        top, bottom = rng.integers(0, 256, (2, 3))
        for _ in range(views):
            h = int(rng.integers(*heights))
            w = max(8, int(h * rng.uniform(0.3, 0.6)))
            crop = rng.integers(0, int(rng.integers(40, 120)), (h, w, 3), dtype=np.uint8)
            # Lighting and pose change colours and proportions between views: retrieval is not trivial.
            jitter = rng.integers(-jitter_max, jitter_max + 1, (2, 3))
            waist = int(h * rng.uniform(0.42, 0.58))
            crop[h // 5 : waist, w // 5 : 4 * w // 5] = np.clip(top + jitter[0], 0, 255)
            crop[waist:, w // 4 : 3 * w // 4] = np.clip(bottom + jitter[1], 0, 255)
            crops.append(crop)
            labels.append(identity)
    return crops, labels


def ground_truth_dict(footage: Footage) -> dict:
    """The JSON form of the ground truth (paths relative to the footage folder)."""
    return {
        "seed": footage.seed,
        "fps": footage.fps,
        "size": list(footage.size),
        "n_frames": footage.n_frames,
        "cameras": {cam: {"video": path.name, "start_ts": footage.start_ts[cam]} for cam, path in footage.videos.items()},
        "identities": {key: {**asdict(ident), "description": ident.description} for key, ident in footage.identities.items()},
        "appearances": [{k: v for k, v in asdict(a).items() if not (k == "feet_y_end" and v is None)} for a in footage.appearances],
        "boxes": [
            {
                "camera": b.camera,
                "frame_index": b.frame_index,
                "ts": b.ts,
                "identity": b.identity,
                "box": list(b.box),
                **({"visible": b.visible} if b.visible < 1.0 else {}),
            }
            for b in footage.boxes
        ],
        **({"scene_seed": footage.scene_seed} if footage.scene_seed not in (None, footage.seed) else {}),
        **({"occluders": {cam: [list(r) for r in rects] for cam, rects in footage.occluders.items()}} if footage.occluders else {}),
    }


# Identities and schedule ------------------------------------------------------------------------------------


def make_identities(
    rng: np.random.Generator, count: int, prefix: str = "p", exclude: frozenset[str] = frozenset()
) -> list[Identity]:
    names = list(COLOURS)
    people: list[Identity] = []
    used: set[tuple] = set()
    while len(people) < count:
        top, bottom = rng.choice(len(names), size=2, replace=False)
        kind = BOTTOMS[int(rng.choice(len(BOTTOMS), p=[0.6, 0.2, 0.2]))]
        item = ITEMS[int(rng.integers(len(ITEMS)))] if rng.random() < 0.75 else None
        item_colour = names[int(rng.integers(len(names)))] if item else None
        key = (top, bottom, kind, item, item_colour)
        if key in used and len(used) < 500:  # keep descriptions distinct while that is possible
            continue
        used.add(key)
        person = Identity(
            id=f"{prefix}{len(people) + 1}",
            top=names[int(top)],
            bottom=names[int(bottom)],
            bottom_kind=kind,
            item=item,
            item_colour=item_colour,
            height_scale=round(float(rng.uniform(0.9, 1.1)), 3),
            skin=int(rng.integers(len(SKIN))),
        )
        if person.description in exclude:  # another footage's person (its rng draws are spent all the same)
            continue
        people.append(person)
    return people


def _make_schedule(
    rng: np.random.Generator,
    people: list[Identity],
    cameras: list[str],
    n_frames: int,
    fps: float,
    start_ts: float,
    size: tuple[int, int],
    idle_frames: int = 0,
) -> list[Appearance]:
    """Each identity walks past up to two cameras (two whenever there are two), one after the other.

    ``idle_frames`` of empty scene go before each visit slot and after the last.
    """
    width, height = size
    visits = min(2, len(cameras))
    gap = max(1, int(round(0.3 * fps)))  # frames between leaving one camera and entering the next
    first, last = 1, n_frames - 2
    slot = (last - first - gap * (visits - 1)) // visits
    if slot < 4:
        raise ValueError(f"{n_frames} frames are too few for {visits} visits per identity; record longer")
    apps: list[Appearance] = []
    for person in people:
        route = [cameras[int(i)] for i in rng.permutation(len(cameras))[:visits]]
        for v, cam in enumerate(route):
            begin = first + v * (slot + gap)
            dur = int(rng.integers(max(3, int(slot * 0.7)), slot + 1))
            frame_start = begin + int(rng.integers(0, slot - dur + 1)) + idle_frames * (v + 1)
            frame_end = frame_start + dur - 1
            feet_y = float(rng.uniform(0.78, 0.95) * height)
            fig_h = figure_height(person, feet_y, height)
            half_w = 0.32 * fig_h
            speed = float(rng.uniform(0.06, 0.1) * width)  # pixels per second
            distance = min(speed * dur / fps, width - 2 * half_w - 8)
            low = half_w + 4
            # max(): when the walk spans the whole frame, rounding may put high a hair below low.
            x_start = float(rng.uniform(low, max(low, width - half_w - 4 - distance)))
            x_end = x_start + distance
            if rng.random() < 0.5:
                x_start, x_end = x_end, x_start
            apps.append(
                Appearance(
                    identity=person.id,
                    camera=cam,
                    frame_start=frame_start,
                    frame_end=frame_end,
                    ts_start=start_ts + frame_start / fps,
                    ts_end=start_ts + frame_end / fps,
                    x_start=round(x_start, 2),
                    x_end=round(x_end, 2),
                    feet_y=round(feet_y, 2),
                )
            )
    return apps


def figure_height(person: Identity, feet_y: float, frame_height: int) -> float:
    # Simple perspective: people lower in the frame are closer and taller.
    return frame_height * (0.25 + 0.2 * feet_y / frame_height) * person.height_scale


# Drawing ------------------------------------------------------------------------------------------------


def scene_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Paving stones, a few wall blocks and grain: enough texture for sharp crops, cheap to encode."""
    width, height = size
    base = rng.integers(70, 150, size=3)
    img = np.empty((height, width, 3), np.float32)
    img[:] = base
    tile = int(rng.integers(18, 30))
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            shade = rng.normal(0, 14)
            img[y : y + tile - 1, x : x + tile - 1] += shade
    for _ in range(6):  # wall blocks and street furniture in the upper part
        x1, y1 = int(rng.integers(0, width - 40)), int(rng.integers(0, height // 2))
        w, h = int(rng.integers(30, width // 3)), int(rng.integers(20, height // 3))
        img[y1 : y1 + h, x1 : x1 + w] = rng.integers(40, 200, size=3)
    img += rng.normal(0, 9, size=img.shape)
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (3, 3), 0)
    return img


def render_frame(
    background: np.ndarray,
    apps: list[Appearance],
    people: list[Identity],
    index: int,
    fps: float,
    start_ts: float,
    camera: str,
    occluders: Sequence[tuple[int, int, int, int]] = (),
    visible_boxes: bool = False,
) -> tuple[np.ndarray, list[GroundTruthBox]]:
    """One frame: the figures of ``apps`` visible at ``index``, far ones first, then the occluders on top."""
    frame = background.copy()
    height, width = frame.shape[:2]
    by_id = {p.id: p for p in people}
    ts = start_ts + index / fps
    visible = [a for a in apps if a.frame_start <= index <= a.frame_end]
    drawn: list[tuple[Appearance, np.ndarray]] = []
    for app in sorted(visible, key=lambda a: (a.position(index)[1], a.identity)):  # far (higher) figures first
        person = by_id[app.identity]
        cx, feet_y = app.position(index)
        fig_h = figure_height(person, feet_y, height)
        phase = abs(cx - app.x_start) / (0.45 * fig_h) * math.pi
        facing = 1 if app.x_end >= app.x_start else -1
        mask = np.zeros((height, width), np.uint8)
        _draw_figure(frame, mask, person, cx, feet_y, fig_h, phase, facing)
        drawn.append((app, mask))
    draw_occluders(frame, occluders)
    cover = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in occluders:
        cover[max(0, y1) : y2, max(0, x1) : x2] = True
    boxes: list[GroundTruthBox] = []
    for app, mask in reversed(drawn):  # nearest first: each figure hides those drawn before it
        own = mask > 0
        shown = own & ~cover if visible_boxes else own
        if visible_boxes:
            cover |= own
        total = int(own.sum())
        ys, xs = np.nonzero(shown)
        if total == 0 or len(xs) == 0 or (visible_boxes and len(xs) < MIN_VISIBLE_SHARE * total):
            continue
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        boxes.append(GroundTruthBox(camera, index, round(ts, 6), app.identity, box, round(len(xs) / total, 3)))
    boxes.reverse()
    return frame, boxes


def draw_occluders(frame: np.ndarray, occluders: Sequence[tuple[int, int, int, int]]) -> None:
    """Pillars in front of the walkers: a lit face with a darker edge, textured so crops stay sharp."""
    for x1, y1, x2, y2 in occluders:
        frame[y1:y2, x1:x2] = (150, 160, 170)
        frame[y1:y2, x1 : x1 + 3] = (90, 95, 100)
        frame[y1:y2, max(x1, x2 - 3) : x2] = (90, 95, 100)
        for y in range(y1 + 8, y2, 16):
            frame[y : y + 2, x1:x2] = (120, 128, 136)


def _draw_figure(
    frame: np.ndarray,
    mask: np.ndarray,
    person: Identity,
    cx: float,
    feet_y: float,
    h: float,
    phase: float,
    facing: int,
) -> None:
    """Draw one figure on ``frame`` and its silhouette on ``mask`` (for the exact ground-truth box)."""
    top, bottom = COLOURS[person.top], COLOURS[person.bottom]
    skin = SKIN[person.skin]
    head_r = 0.085 * h
    head_c = (cx, feet_y - h + head_r)
    neck_y = feet_y - h + 2 * head_r
    hip_y = feet_y - 0.47 * h
    torso_w = 0.3 * h
    swing = math.sin(phase)

    def poly(points: list[tuple[float, float]], colour: tuple[int, int, int]) -> None:
        pts = np.round(np.array(points, np.float32) * 8).astype(np.int32)  # 3 fractional bits: smooth motion
        cv2.fillPoly(frame, [pts], colour, cv2.LINE_AA, 3)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_8, 3)

    def rect(x1: float, y1: float, x2: float, y2: float, colour: tuple[int, int, int]) -> None:
        poly([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], colour)

    # Legs (or a skirt with legs below), swinging with the walking phase.
    leg_w = 0.11 * h
    for side in (-1, 1):
        foot_x = cx + side * 0.05 * h + side * swing * 0.12 * h
        hip_x = cx + side * 0.06 * h
        colour = bottom if person.bottom_kind == "trousers" else skin
        poly(
            [
                (hip_x - leg_w / 2, hip_y),
                (hip_x + leg_w / 2, hip_y),
                (foot_x + leg_w / 2, feet_y - 0.03 * h),
                (foot_x - leg_w / 2, feet_y - 0.03 * h),
            ],
            colour,
        )
        rect(foot_x - leg_w / 2 - 0.01 * h, feet_y - 0.035 * h, foot_x + leg_w / 2 + 0.03 * h * facing, feet_y, COLOURS["black"])
    if person.bottom_kind == "shorts":
        for side in (-1, 1):
            hip_x = cx + side * 0.06 * h
            rect(hip_x - leg_w * 0.65, hip_y - 0.02 * h, hip_x + leg_w * 0.65, hip_y + 0.16 * h, bottom)
    elif person.bottom_kind == "skirt":
        poly(
            [
                (cx - torso_w / 2, hip_y - 0.03 * h),
                (cx + torso_w / 2, hip_y - 0.03 * h),
                (cx + torso_w * 0.62, hip_y + 0.2 * h),
                (cx - torso_w * 0.62, hip_y + 0.2 * h),
            ],
            bottom,
        )

    # Backpack behind the torso (on the side opposite the walking direction).
    if person.item == "backpack":
        back = cx - facing * torso_w / 2
        rect(
            min(back, back - facing * 0.1 * h),
            neck_y + 0.04 * h,
            max(back, back - facing * 0.1 * h),
            hip_y - 0.05 * h,
            COLOURS[person.item_colour],
        )

    # Torso and arms in the top colour; hands in skin colour.
    rect(cx - torso_w / 2, neck_y, cx + torso_w / 2, hip_y, top)
    for side in (-1, 1):
        shoulder_x = cx + side * (torso_w / 2 + 0.03 * h)
        hand_x = shoulder_x + side * 0.01 * h - side * swing * 0.08 * h
        arm_w = 0.065 * h
        poly(
            [
                (shoulder_x - arm_w / 2, neck_y + 0.01 * h),
                (shoulder_x + arm_w / 2, neck_y + 0.01 * h),
                (hand_x + arm_w / 2, hip_y + 0.04 * h),
                (hand_x - arm_w / 2, hip_y + 0.04 * h),
            ],
            top,
        )
        rect(hand_x - arm_w / 2, hip_y + 0.04 * h, hand_x + arm_w / 2, hip_y + 0.09 * h, skin)

    if person.item == "bag":
        bag_x = cx + facing * (torso_w / 2 + 0.06 * h)
        cv2.line(frame, (int(cx), int(neck_y)), (int(bag_x), int(hip_y)), COLOURS[person.item_colour], 2)
        rect(bag_x - 0.07 * h, hip_y - 0.04 * h, bag_x + 0.07 * h, hip_y + 0.1 * h, COLOURS[person.item_colour])

    # Head, with eyes on the facing side so that direction is visible.
    poly(_circle(head_c, head_r), skin)
    eye = (head_c[0] + facing * head_r * 0.45, head_c[1] - head_r * 0.15)
    cv2.circle(frame, (int(round(eye[0])), int(round(eye[1]))), max(1, int(head_r * 0.15)), (20, 20, 20), -1)
    if person.item == "hat":
        rect(
            head_c[0] - head_r * 1.35,
            head_c[1] - head_r * 0.55,
            head_c[0] + head_r * 1.35,
            head_c[1] - head_r * 0.3,
            COLOURS[person.item_colour],
        )
        rect(
            head_c[0] - head_r * 0.9,
            head_c[1] - head_r * 1.35,
            head_c[0] + head_r * 0.9,
            head_c[1] - head_r * 0.5,
            COLOURS[person.item_colour],
        )


def _circle(centre: tuple[float, float], radius: float, n: int = 20) -> list[tuple[float, float]]:
    return [
        (centre[0] + radius * math.cos(2 * math.pi * k / n), centre[1] + radius * math.sin(2 * math.pi * k / n)) for k in range(n)
    ]


def _check_readable(path: Path, n_frames: int) -> None:
    """Fail here, with the file named, when this OpenCV build writes MP4s it cannot read back."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        ok = cap.isOpened() and cap.read()[0]
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
    finally:
        cap.release()
    if not ok or abs(count - n_frames) > 1:
        raise SourceError(
            f"{path} was written but reads back as {count} of {n_frames} frames; this OpenCV build cannot round-trip mp4v MP4 files"
        )


# Single person views with occluders (re-id under occlusion) ------------------------------------------------------

OCCLUDERS = ("object", "person")


@dataclass(frozen=True)
class PersonView:
    """One crop of one identity as a detector would cut it, and the share of its silhouette an occluder hides."""

    image: np.ndarray  # RGB uint8 HxWx3
    identity: str
    occluded: float


def person_view(
    person: Identity,
    rng: np.random.Generator,
    *,
    occlusion: float = 0.0,
    occluder: str = "object",
    others: Sequence[Identity] = (),
    height: int = 96,
) -> PersonView:
    """``person`` walking in front of a scene patch, cropped to their box, with ``occlusion`` (0..0.9) of their
    silhouette hidden by ``occluder``: ``object`` (a block of street furniture rising from the ground or standing
    at one side) or ``person`` (one of ``others`` passing in front). Pose, facing, size, lighting and background
    vary with ``rng``; the share actually hidden is within a few points of ``occlusion``."""
    if not 0.0 <= occlusion <= 0.9:
        raise ValueError(f"occlusion must be in [0, 0.9], not {occlusion}")
    if occluder not in OCCLUDERS:
        raise ValueError(f"occluder must be one of {', '.join(OCCLUDERS)}, not {occluder!r}")
    if occluder == "person" and occlusion > 0 and not others:
        raise ValueError("a person occluder needs other identities to draw")
    fig_h = height * float(rng.uniform(0.9, 1.05))
    canvas_h, canvas_w = int(height * 1.15), int(height * 0.9)
    scene = scene_background(rng, (max(200, 2 * canvas_w), max(200, canvas_h)))
    top, left = int(rng.integers(scene.shape[0] - canvas_h + 1)), int(rng.integers(scene.shape[1] - canvas_w + 1))
    frame = np.ascontiguousarray(scene[top : top + canvas_h, left : left + canvas_w])
    mask = np.zeros((canvas_h, canvas_w), np.uint8)
    cx, feet_y = canvas_w / 2 + float(rng.uniform(-0.04, 0.04)) * height, canvas_h - 0.06 * height
    facing = 1 if rng.random() < 0.5 else -1
    _draw_figure(frame, mask, person, cx, feet_y, fig_h, float(rng.uniform(0, 2 * math.pi)), facing)
    own = mask > 0
    hidden = 0.0
    if occlusion > 0:
        if occluder == "object":
            cover = _cover_with_object(frame, own, occlusion, rng)
        else:
            other = others[int(rng.integers(len(others)))]
            cover = _cover_with_person(frame, own, other, occlusion, rng, (cx, feet_y, fig_h))
        hidden = _cover_share(own, cover)
    ys, xs = np.nonzero(own)
    pad = int(0.03 * height)
    y1, y2 = max(0, ys.min() - pad), min(canvas_h, ys.max() + 1 + pad)
    x1, x2 = max(0, xs.min() - pad), min(canvas_w, xs.max() + 1 + pad)
    crop = frame[y1:y2, x1:x2].astype(np.float32) * float(rng.uniform(0.8, 1.2)) + rng.normal(0, 6, (y2 - y1, x2 - x1, 3))
    rgb = cv2.cvtColor(np.clip(crop, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
    return PersonView(rgb, person.id, round(hidden, 3))


def _cover_share(own: np.ndarray, cover: np.ndarray) -> float:
    return float((own & cover).sum()) / max(1, int(own.sum()))


def _cover_with_object(frame: np.ndarray, own: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """A block from the bottom, the left or the right, grown until it hides ``target`` of the silhouette; returns
    the pixels it covers."""
    height, width = own.shape
    side = ("bottom", "left", "right")[int(rng.integers(3))]
    size = height if side == "bottom" else width

    def block(extent: int) -> np.ndarray:
        cover = np.zeros_like(own)
        if side == "bottom":
            cover[height - extent :, :] = True
        elif side == "left":
            cover[:, :extent] = True
        else:
            cover[:, width - extent :] = True
        return cover

    low, high = 0, size
    while low < high:  # the smallest block that hides at least the target
        middle = (low + high) // 2
        low, high = (middle + 1, high) if _cover_share(own, block(middle)) < target else (low, middle)
    cover = block(low)
    ys, xs = np.nonzero(cover)
    if len(xs):
        colour = tuple(int(c) for c in rng.integers(60, 200, 3))
        frame[cover] = colour
        draw_occluders(frame, [(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)])
        frame[cover & (rng.random(own.shape) < 0.1)] = colour
    return cover


def _cover_with_person(
    frame: np.ndarray, own: np.ndarray, other: Identity, target: float, rng: np.random.Generator, where: tuple[float, float, float]
) -> np.ndarray:
    """``other`` drawn in front (a little nearer, so a little larger), shifted sideways until it hides ``target``;
    returns the pixels it covers."""
    cx, feet_y, fig_h = where
    side = 1 if rng.random() < 0.5 else -1
    phase, facing = float(rng.uniform(0, 2 * math.pi)), (1 if rng.random() < 0.5 else -1)

    def silhouette(offset: float) -> np.ndarray:
        layer = np.zeros(own.shape, np.uint8)
        _draw_figure(
            np.zeros((*own.shape, 3), np.uint8),
            layer,
            other,
            cx + side * offset,
            feet_y + 0.04 * fig_h,
            fig_h * 1.08,
            phase,
            facing,
        )
        return layer > 0

    low, high = 0.0, 0.6 * fig_h
    for _ in range(14):  # the farthest shift that still hides at least the target
        middle = (low + high) / 2
        low, high = (middle, high) if _cover_share(own, silhouette(middle)) >= target else (low, middle)
    _draw_figure(frame, np.zeros(own.shape, np.uint8), other, cx + side * low, feet_y + 0.04 * fig_h, fig_h * 1.08, phase, facing)
    return silhouette(low)
