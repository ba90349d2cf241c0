"""Person datasets for training and evaluation, named ``KIND:PATH``.

Every kind yields the same ``Sample``: an image (a path, or a loader for crops
held in memory), an identity, a camera, captions and a split. Kinds:

- ``cuhk-pedes`` / ``icfg-pedes``: a JSON list of ``{"file_path", "id", "captions", "split"}``
  (``file_path`` relative to the JSON file's folder; PATH is the JSON file or its folder);
- ``rstpreid``: the same with ``img_path`` instead of ``file_path``;
- ``market1501``: a Market-1501 folder (``bounding_box_train`` -> train, ``bounding_box_test``
  -> gallery, ``query`` -> query); identity and camera come from file names such as
  ``0002_c1s1_000451_03.jpg``; identity -1 (junk) is dropped, identity 0 (distractors) is kept;
  Market-1501 has no captions;
- ``csv``: ``path,identity,caption,split`` (and optionally ``camera``) with a header, paths relative
  to the CSV; rows of one path are merged (one caption each);
- ``feedback``: a camtrace data dir (its database - CAMTRACE_DATABASE_URL when set - and crop
  store): tracks that investigators confirmed as the same person form one identity, and their
  stored crops are its images, on their own cameras; no captions (they train the image-image term);
- ``synthetic``: a folder written by ``camtrace.synthetic.generate_footage`` or ``generate_site`` (videos
  and ``ground_truth.json``): ground-truth boxes are cropped from the videos, a few per walk past a camera
  (and/or the detector's boxes on the same frames: ``crops``); identities are split by their order in the
  ground truth: the first 60% train, the next 20% val, the rest test;
- ``site``: a camtrace data dir, without labels (camtrace.training.site): each track is a person, tracks
  confirmed or matched with confidence across cameras one person; tracks seen together are different people.

A camera of "" means unknown (JSON kinds without a ``camera`` field, CSV without the column).
Captions are normalised to comma-separated visual features (``normalise_caption``), the form the
model is trained and queried with; ``raw_captions=True`` keeps them exactly as the dataset gives
them (the form published text-to-person results are measured on). Blank captions, and captions with
no feature left after normalisation, are dropped.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from camtrace.enums import Verdict
from camtrace.errors import InputError

SPLITS = ("train", "val", "test", "query", "gallery")
JSON_KINDS = {"cuhk-pedes": "file_path", "icfg-pedes": "file_path", "rstpreid": "img_path"}
KINDS = (*JSON_KINDS, "market1501", "csv", "synthetic", "feedback", "site")
CROP_SOURCES = ("tight", "detector", "both")
DETECTOR_BATCH = 16
DETECTOR_MATCH_IOU = 0.5
DETECTOR_MIN_HEIGHT = 48  # CAMTRACE_MIN_CROP_HEIGHT's default: the pipeline keeps no shorter crop
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MARKET_FOLDERS = {"bounding_box_train": "train", "bounding_box_test": "gallery", "query": "query"}
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
# Identity splits of synthetic footage, in ground-truth order: the first 60% train, then 20% val, then test.
SYNTHETIC_SPLIT = (0.6, 0.2)
SYNTHETIC_CROPS_PER_WALK = 6
MIN_VISIBLE = 0.6  # a synthetic person hidden beyond this share makes no training crop


# --------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------
# Words that join features in free text: each starts a new feature phrase.
_JOINERS = r"\b(?:and|with|in|wearing|wears|carrying|carries|holding|holds|has|having|who|while|also)\b"
# Words dropped from the start of a phrase: articles, pronouns and verbs that carry no visual feature.
_LEADING_FILLER = {
    "a",
    "an",
    "the",
    "he",
    "she",
    "they",
    "it",
    "is",
    "are",
    "was",
    "his",
    "her",
    "their",
    "this",
    "that",
    "there",
    "pair",
    "of",
    "on",
    "in",
}


def normalise_caption(text: str) -> str:
    """Free text -> comma-separated visual features, lower-case.

    Sentences and clauses are split at punctuation and at joining words (and,
    with, in, wearing, carrying, holding, has, who, ...); leading articles,
    pronouns and "is/are" are dropped; empty and repeated phrases are removed.
    "A man wearing a grey hoodie and blue jeans." -> "man, grey hoodie, blue jeans".
    Already normalised text comes back unchanged.
    """
    features: list[str] = []
    lowered = text.lower().replace("-", " ")
    for chunk in re.split(r"[.,;:!?()\n]+", lowered):
        for phrase in re.split(_JOINERS, chunk):
            words = re.findall(r"[a-z0-9']+", phrase)
            while words and words[0] in _LEADING_FILLER:
                words.pop(0)
            feature = " ".join(words)
            if feature and feature not in features:
                features.append(feature)
    return ", ".join(features)


def split_features(caption: str) -> list[str]:
    return [part.strip() for part in caption.split(",") if part.strip()]


# --------------------------------------------------------------------------
# Samples and datasets
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One person image with its identity, camera, captions and split."""

    image: Path | Callable[[], Any]
    identity: str
    camera: str
    captions: list[str] = field(default_factory=list)
    split: str = "train"
    # Samples of one group were seen together (one camera, one stretch of time): their identities are surely
    # different people, so a batch may set them against each other without any label (site data).
    group: str = ""

    def load_image(self):
        """The image as an RGB PIL image."""
        from PIL import Image, UnidentifiedImageError

        if callable(self.image):
            image = self.image()
        else:
            try:
                with Image.open(self.image) as opened:
                    image = opened.convert("RGB")
            except FileNotFoundError as exc:
                raise InputError(f"image {self.image} of identity {self.identity} does not exist") from exc
            except (UnidentifiedImageError, OSError) as exc:
                raise InputError(f"image {self.image} of identity {self.identity} cannot be read: {exc}") from exc
        return image if image.mode == "RGB" else image.convert("RGB")


class PersonDataset:
    """A list of samples with the splits, identities and cameras they cover."""

    def __init__(self, samples: Sequence[Sample], name: str = "") -> None:
        self.samples: list[Sample] = list(samples)
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __repr__(self) -> str:
        counts = ", ".join(f"{split} {n}" for split, n in sorted(Counter(s.split for s in self.samples).items()))
        return f"PersonDataset({self.name!r}: {len(self.samples)} images, {len(self.identities)} identities; {counts})"

    @property
    def splits(self) -> set[str]:
        return {sample.split for sample in self.samples}

    @property
    def identities(self) -> list[str]:
        return sorted({sample.identity for sample in self.samples})

    def split(self, *names: str) -> PersonDataset:
        """The samples of the given split(s)."""
        for name in names:
            if name not in SPLITS:
                raise InputError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        label = f"{self.name}[{'+'.join(names)}]"
        return PersonDataset([s for s in self.samples if s.split in names], label)

    @staticmethod
    def concat(datasets: Sequence[PersonDataset]) -> PersonDataset:
        """One dataset of several; identities and cameras are prefixed with each dataset's name when there are several."""
        if len(datasets) == 1:
            return datasets[0]
        samples = [
            replace(s, identity=f"{ds.name}/{s.identity}", camera=f"{ds.name}/{s.camera}" if s.camera else "")
            for ds in datasets
            for s in ds.samples
        ]
        return PersonDataset(samples, "+".join(ds.name for ds in datasets))


def parse_spec(spec: str) -> tuple[str, Path]:
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise InputError(f"dataset {spec!r} must be written KIND:PATH with KIND one of {', '.join(KINDS)}")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise InputError(f"unknown dataset kind {kind!r} in {spec!r}; use one of {', '.join(KINDS)}")
    return kind, Path(path).expanduser()


def load_dataset(spec: str, *, raw_captions: bool = False, crops: str = "tight", detector: Any = None) -> PersonDataset:
    """``KIND:PATH`` -> PersonDataset; a missing path or a malformed entry raises InputError naming it.

    Captions are normalised unless ``raw_captions``. Footage with ground truth (``synthetic``) yields the
    tight ground-truth boxes (``crops`` "tight"), the boxes ``detector`` finds on the same frames cut as the
    pipeline cuts them ("detector": what the model will embed), or both."""
    if crops not in CROP_SOURCES:
        raise InputError(f"crops must be one of {', '.join(CROP_SOURCES)}, not {crops!r}")
    if crops != "tight" and detector is None:
        raise InputError(f"crops {crops!r} need a person detector to cut them")
    kind, path = parse_spec(spec)
    if not path.exists():
        raise InputError(f"dataset {spec!r}: {path} does not exist")
    if kind in JSON_KINDS:
        samples = _load_json(path, JSON_KINDS[kind])
    elif kind == "market1501":
        samples = _load_market(path)
    elif kind == "csv":
        samples = _load_csv(path)
    elif kind == "feedback":
        samples = _load_feedback(path)
    elif kind == "site":
        from camtrace.training.site import load_site

        samples = load_site(path)
    else:
        samples = _load_synthetic(path, crops, detector)
    if not samples:
        raise InputError(f"dataset {spec!r} holds no images")
    if not raw_captions:
        samples = [replace(s, captions=_normalised(s.captions)) for s in samples]
    return PersonDataset(samples, f"{kind}:{path.name}")


# --------------------------------------------------------------------------
# JSON annotations (CUHK-PEDES, ICFG-PEDES, RSTPReid)
# --------------------------------------------------------------------------
def _annotation_file(path: Path, kind_names: Iterable[str]) -> Path:
    if path.is_file():
        return path
    candidates = sorted(p for p in path.glob("*.json"))
    preferred = [p for p in candidates if any(name in p.stem.lower() for name in kind_names)]
    found = preferred or candidates
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise InputError(f"{path} must hold exactly one annotation JSON file (found: {listed}); name the file instead")
    return found[0]


def _load_json(path: Path, path_key: str) -> list[Sample]:
    file = _annotation_file(path, ("reid", "caption", "data", "anno"))
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise InputError(f"{file} must hold a JSON list of annotations, not {type(entries).__name__}")
    root = file.parent
    samples = []
    for index, entry in enumerate(entries):
        where = f"{file} entry {index}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} must be an object with {path_key}, id, captions and split")
        missing = [key for key in (path_key, "id", "captions") if key not in entry]
        if missing:
            raise InputError(f"{where} lacks {', '.join(missing)}")
        captions = entry["captions"]
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise InputError(f"{where}: captions must be a list of strings")
        split = _check_split(str(entry.get("split", "train")), where)
        image = root / str(entry[path_key])
        if not image.is_file():  # found now rather than hours into a training run
            raise InputError(f"{where}: image {image} does not exist")
        camera = str(entry.get("camera", entry.get("cam_id", "")))
        samples.append(Sample(image, str(entry["id"]), camera, _given(captions), split))
    return samples


def _check_split(split: str, where: str) -> str:
    split = split.strip().lower()
    if split not in SPLITS:
        raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    return split


def _given(texts: Iterable[str]) -> list[str]:
    """Captions as the dataset gives them, blank ones dropped."""
    return [t for t in texts if t.strip()]


def _normalised(texts: Iterable[str]) -> list[str]:
    return [c for c in (normalise_caption(t) for t in texts) if c]


# --------------------------------------------------------------------------
# Market-1501 folders
# --------------------------------------------------------------------------
def _load_market(path: Path) -> list[Sample]:
    if not path.is_dir():
        raise InputError(f"{path} must be a Market-1501 folder holding bounding_box_train, bounding_box_test and query")
    present = [name for name in MARKET_FOLDERS if (path / name).is_dir()]
    if not present:
        raise InputError(f"{path} holds none of {', '.join(MARKET_FOLDERS)}: not a Market-1501 folder")
    samples = []
    for folder in present:
        for file in sorted((path / folder).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            match = _MARKET_NAME.match(file.name)
            if match is None:
                raise InputError(f"{file}: name does not start with IDENTITY_cCAMERA (like 0002_c1s1_000451_03.jpg)")
            identity = int(match.group(1))
            if identity == -1:  # junk: detections too poor to count either way
                continue
            samples.append(Sample(file, f"{identity:04d}", f"c{match.group(2)}", [], MARKET_FOLDERS[folder]))
    return samples


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------
CSV_COLUMNS = ("path", "identity", "caption", "split")


def _load_csv(path: Path) -> list[Sample]:
    if not path.is_file():
        raise InputError(f"{path} must be a CSV file with columns {','.join(CSV_COLUMNS)}")
    by_path: dict[tuple[Path, str, str, str], list[str]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{path} line 1: header lacks {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row or any(row.get(c) is None for c in CSV_COLUMNS):
                raise InputError(f"{where}: expected {len(header)} fields")
            if not row["path"].strip() or not row["identity"].strip():
                raise InputError(f"{where}: path and identity must not be empty")
            split = _check_split(row["split"] or "train", where)
            key = (path.parent / row["path"].strip(), row["identity"].strip(), split, (row.get("camera") or "").strip())
            if not key[0].is_file():
                raise InputError(f"{where}: image {key[0]} does not exist")
            by_path.setdefault(key, []).extend(_given([row["caption"]]))
    return [Sample(image, identity, camera, captions, split) for (image, identity, split, camera), captions in by_path.items()]


# --------------------------------------------------------------------------
# Operators' confirmed matches
# --------------------------------------------------------------------------
def _load_feedback(path: Path) -> list[Sample]:
    from camtrace.settings import load_settings
    from camtrace.storage import CropStore, Database

    if not path.is_dir():
        raise InputError(f"feedback:{path} must name a camtrace data dir (CAMTRACE_DATA_DIR)")
    settings = load_settings(data_dir=path)
    crops = CropStore(settings.crops_dir)
    with Database(settings.sql_url) as db:
        db.migrate()
        confirmed = db.feedback_pairs(verdict=Verdict.SAME)
        groups = _connected_tracks((row.track_id, row.candidate_track_id) for row in confirmed)
        samples = []
        for tracks in groups:
            identity = f"feedback-{tracks[0]}"  # named by its first track id: stable across runs
            for track_id in tracks:
                for detection in db.track_detections(track_id):
                    image = crops.path(detection.crop_key)
                    if image.is_file():  # retention may have removed the footage since the verdict
                        samples.append(Sample(image, identity, detection.camera_id, [], "train"))
    return samples


def _connected_tracks(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Tracks linked by "same" verdicts, directly or through others: one sorted list per person."""
    parent: dict[str, str] = {}

    def root(track: str) -> str:
        parent.setdefault(track, track)
        while parent[track] != track:
            parent[track] = parent[parent[track]]
            track = parent[track]
        return track

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for track in parent:
        groups.setdefault(root(track), []).append(track)
    return sorted(sorted(group) for group in groups.values())


# --------------------------------------------------------------------------
# Synthetic footage
# --------------------------------------------------------------------------
def _load_synthetic(path: Path, crops: str = "tight", detector: Any = None) -> list[Sample]:
    from camtrace.synthetic import GROUND_TRUTH_FILE

    file = path / GROUND_TRUTH_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path} holds no {GROUND_TRUTH_FILE}; write one with `camtrace synth FOLDER`")
    try:
        truth = json.loads(file.read_text(encoding="utf-8"))
        cameras = {cam: file.parent / info["video"] for cam, info in truth["cameras"].items()}
        descriptions = {key: ident["description"] for key, ident in truth["identities"].items()}
        appearances = truth["appearances"]
        boxes = truth["boxes"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{file} is not a synthetic ground truth file ({type(exc).__name__}: {exc})") from exc

    split_of = _synthetic_splits(list(descriptions))
    width = int(truth.get("size", [0, 0])[0])
    wanted = _frames_per_walk(appearances, _whole_views(boxes, width))
    samples = []
    for camera, video in cameras.items():
        needed: dict[int, list[dict]] = {}
        for box in boxes:
            if box["camera"] == camera and (box["identity"], box["frame_index"]) in wanted.get(camera, set()):
                needed.setdefault(box["frame_index"], []).append(box)
        for box, crop in _crop_video(video, needed, crops, detector):
            identity = box["identity"]
            samples.append(Sample(_array_loader(crop), identity, camera, _given([descriptions[identity]]), split_of[identity]))
    return samples


def _synthetic_splits(identities: list[str]) -> dict[str, str]:
    n = len(identities)
    n_train = max(1, round(n * SYNTHETIC_SPLIT[0])) if n >= 3 else n
    n_val = max(1, round(n * SYNTHETIC_SPLIT[1])) if n >= 3 else 0
    return {key: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, key in enumerate(identities)}


def _whole_views(boxes: list[dict], width: int) -> set[tuple[str, str, int]]:
    """(camera, identity, frame) of boxes showing the whole person: not cut by the frame border and not
    mostly hidden (a walk that enters and leaves the view starts and ends with slivers)."""
    return {
        (box["camera"], box["identity"], int(box["frame_index"]))
        for box in boxes
        if box.get("visible", 1.0) >= MIN_VISIBLE and (width <= 0 or (box["box"][0] > 1 and box["box"][2] < width - 1))
    }


def _frames_per_walk(appearances: list[dict], whole: set[tuple[str, str, int]]) -> dict[str, set[tuple[str, int]]]:
    """Up to SYNTHETIC_CROPS_PER_WALK frames evenly spread over the frames of each walk past a camera that show
    the whole person."""
    wanted: dict[str, set[tuple[str, int]]] = {}
    for app in appearances:
        usable = [f for f in range(app["frame_start"], app["frame_end"] + 1) if (app["camera"], app["identity"], f) in whole]
        if not usable:
            continue
        picks = np.linspace(0, len(usable) - 1, min(SYNTHETIC_CROPS_PER_WALK, len(usable))).round().astype(int)
        wanted.setdefault(app["camera"], set()).update((app["identity"], usable[int(k)]) for k in picks)
    return wanted


def _crop_video(
    video: Path, needed: dict[int, list[dict]], crops: str = "tight", detector: Any = None
) -> Iterable[tuple[dict, np.ndarray]]:
    """RGB crops of the ground-truth boxes ``needed`` per frame: the tight boxes, and/or (``crops`` "detector"
    or "both") the boxes ``detector`` finds there, matched to a ground-truth box by IoU >= 0.5 and cut, filtered
    and JPEG-encoded as the pipeline cuts what it embeds."""
    import cv2

    if not needed:
        return
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise InputError(f"synthetic video {video} cannot be opened")
    try:
        last = max(needed)
        batch: list[tuple[int, np.ndarray]] = []
        for index in range(last + 1):
            ok, frame = cap.read()
            if not ok:
                raise InputError(f"synthetic video {video} ends at frame {index}; the ground truth needs frame {last}")
            if index not in needed:
                continue
            if crops in ("tight", "both"):
                for box in needed[index]:
                    x1, y1, x2, y2 = (int(round(v)) for v in box["box"])
                    crop = frame[max(0, y1) : y2, max(0, x1) : x2, ::-1]
                    if crop.size:
                        yield box, np.ascontiguousarray(crop)
            if crops in ("detector", "both"):
                batch.append((index, frame))
                if len(batch) >= DETECTOR_BATCH:
                    yield from _detector_crops(detector, batch, needed)
                    batch = []
        if batch:
            yield from _detector_crops(detector, batch, needed)
    finally:
        cap.release()


def _detector_crops(
    detector: Any, frames: list[tuple[int, np.ndarray]], needed: dict[int, list[dict]]
) -> Iterable[tuple[dict, np.ndarray]]:
    import cv2

    from camtrace.detection.selection import crop_box, is_cut_off

    for (index, frame), found in zip(frames, detector.detect([f for _, f in frames])):
        height, width = frame.shape[:2]
        for box in needed[index]:
            ious = [_iou(row[:4], box["box"]) for row in found]
            if not ious or max(ious) < DETECTOR_MATCH_IOU:
                continue
            x1, y1, x2, y2 = (float(v) for v in found[int(np.argmax(ious))][:4])
            if y2 - y1 < DETECTOR_MIN_HEIGHT or is_cut_off((x1, y1, x2, y2), width, height):
                continue  # the pipeline drops these crops too
            ok, jpeg = cv2.imencode(".jpg", crop_box(frame, (x1, y1, x2, y2)), [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                yield box, np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])


def _iou(a: Any, b: Any) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _array_loader(array: np.ndarray) -> Callable[[], Any]:
    def load():
        from PIL import Image

        return Image.fromarray(array, "RGB")

    return load
