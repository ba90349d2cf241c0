"""Does camtrace find the right person? Retrieval quality on a synthetic world, trained against untrained models.

    python benchmarks/bench_quality.py                    # full run: ~5 min on 2 idle CPU cores (~30 busy), less once cached
    python benchmarks/bench_quality.py --quick            # fewer people, seconds and epochs (development)
    python benchmarks/bench_quality.py --json quality.json

The world: a few cameras, each with its own fixed scene, and two disjoint sets
of synthetic people (camtrace.synthetic: clothing colours, items and an
operator-style description) walking past them: training people and test
people, no two of whom share a description.

1. A YOLO person detector (``yolo11n.yaml``, random initialisation) is trained
   with Ultralytics' own trainer on frames of the training footage and their
   ground-truth boxes; its mAP50 is measured on held-out frames of the test
   footage.
2. An embedding model is trained with ``camtrace train`` on crops and
   descriptions of the training people, starting from a small randomly
   initialised SigLIP (embedding/tiny_model.py). That random start is the
   untrained baseline.
3. The test cameras are ingested through the real local pipeline (detector,
   ByteTrack, crop selection, embedding, Qdrant Edge, SQLite) once per
   embedding model and crop setting, each into a fresh data dir, and searched
   through the real query stage. Each indexed track gets a ground-truth
   identity by box IoU (benchmarks/quality_eval.py), then:
   - text -> track: every test person's description; Top-1/Top-5 = the
     person's track is first / among the first five;
   - photo re-id across cameras: each track's crops query the other cameras'
     tracks (a track scores its best match to any query crop); Top-1 and mAP;
   - trace precision/recall from seed tracks, where ``SearchService.trace`` exists.
   Crop settings: the K best crops per track (CAMTRACE_CROPS_PER_TRACK
   default), one crop per track, and every crop (a large K, no size or
   sharpness filter).
4. The runtimes' quality guard on the trained model: the ingest rows run on
   the CPU default (ONNX Runtime, int8); the K-best row is repeated on PyTorch
   fp32, and the ground-truth crops are measured with PyTorch fp32, bf16 (the
   GPU default's number format) and ONNX int8. A fast path may stay a default
   only within 0.5 points of fp32 on Top-1 and mAP.

Trained models are cached in a folder keyed by their parameters (``--cache``),
so a second run reuses them. Nothing is downloaded: Ultralytics runs with
YOLO_OFFLINE=1, YOLO_AUTOINSTALL=False, no plots and no AMP check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import trace_study
from quality_eval import GroundTruth, crossing_figures, identity_of_track, ranking_figures

DONE = "complete.json"  # written last into a cache folder: its presence means the stage finished


@dataclass(frozen=True)
class WorldConfig:
    """A site of cameras along a corridor (camtrace.synthetic_site): several training footages of it (other
    people) and one test footage, longer and busier."""

    cameras: int
    train_footages: int
    train_identities: int  # per training footage
    train_seconds: float
    test_identities: int
    test_seconds: float
    fps: float = 10.0
    size: tuple[int, int] = (640, 360)
    seed: int = 11


@dataclass(frozen=True)
class DetectorConfig:
    epochs: int
    imgsz: int = 256
    batch: int = 8
    train_frame_stride: int = 8  # every n-th frame of the training footage is a training image
    val_frame_stride: int = 10  # every n-th frame of the test footage is a held-out image
    seed: int = 0


@dataclass(frozen=True)
class EmbedderConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    image_size: int
    patch_size: int
    epochs: int
    lr: float
    batch_size: int
    image_weight: float = 0.5  # weight of the image-to-image (re-id) term of the loss
    seed: int = 0


@dataclass(frozen=True)
class Preset:
    world: WorldConfig
    detector: DetectorConfig
    embedder: EmbedderConfig


PRESETS = {
    "full": Preset(
        WorldConfig(cameras=4, train_footages=4, train_identities=20, train_seconds=150.0, test_identities=64, test_seconds=480.0),
        DetectorConfig(epochs=10, train_frame_stride=12),
        EmbedderConfig(96, 4, 4, 384, 64, 8, epochs=20, lr=1e-3, batch_size=32, image_weight=1.0),
    ),
    "quick": Preset(
        WorldConfig(cameras=4, train_footages=2, train_identities=12, train_seconds=100.0, test_identities=24, test_seconds=180.0),
        DetectorConfig(epochs=6, train_frame_stride=8),
        EmbedderConfig(64, 2, 2, 256, 64, 8, epochs=5, lr=1e-3, batch_size=32, image_weight=1.0),
    ),
}

# Crop settings compared, as settings overrides: the default K, one crop per track, and every crop
# (a K no track reaches, with the size and sharpness filters off; frame-cut crops are still dropped).
CROP_MODES: dict[str, dict[str, object]] = {
    "K best": {},
    "1 crop": {"crops_per_track": 1},
    "every crop": {"crops_per_track": 100_000, "min_crop_height": 1, "min_crop_sharpness": 0.0},
}


# Cache -----------------------------------------------------------------------------------------------------


def cache_folder(root: Path, stage: str, params: object) -> Path:
    """``root/<stage>-<hash of params>``: a change of any parameter builds anew, an equal one reuses."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return root / f"{stage}-{digest}"


def is_complete(folder: Path) -> bool:
    return (folder / DONE).is_file()


def mark_complete(folder: Path, record: dict) -> None:
    (folder / DONE).write_text(json.dumps(record, indent=1, default=str))


def read_record(folder: Path) -> dict:
    return json.loads((folder / DONE).read_text())


def fresh(folder: Path) -> Path:
    """An empty folder for a stage that did not finish before (a half-written one is removed)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# 0. The world ----------------------------------------------------------------------------------------------


def build_world(cache: Path, world: WorldConfig) -> tuple[list[Path], Path]:
    """Training footages and the test footage of one site: same cameras, scenes and transit times, no person
    (and no look) in two of them."""
    from camtrace.synthetic_site import SiteConfig, generate_site

    folder = cache_folder(cache, "site", asdict(world))
    train_dirs = [folder / f"train{k + 1}" for k in range(world.train_footages)]
    test_dir = folder / "test"
    if is_complete(folder):
        return train_dirs, test_dir
    fresh(folder)
    common = {"cameras": world.cameras, "fps": world.fps, "size": world.size, "scene_seed": world.seed}
    worn: set[str] = set()  # descriptions taken: the test people look like nobody trained on
    for k, train_dir in enumerate(train_dirs):
        config = SiteConfig(
            people=world.train_identities,
            seconds=world.train_seconds,
            seed=world.seed + 1 + k,
            identity_prefix=f"train{k + 1}-",
            **common,
        )
        footage = generate_site(train_dir, config, exclude_descriptions=worn)
        worn |= set(footage.descriptions.values())
    test = SiteConfig(people=world.test_identities, seconds=world.test_seconds, seed=world.seed, identity_prefix="test", **common)
    generate_site(test_dir, test, exclude_descriptions=worn)
    mark_complete(folder, asdict(world))
    return train_dirs, test_dir


# 1. The detector -------------------------------------------------------------------------------------------


def write_yolo_split(footage_dir: Path, dataset: Path, split: str, stride: int, prefix: str = "") -> int:
    """Every ``stride``-th frame of each camera as a JPEG plus a YOLO label file; returns the image count."""
    import cv2

    truth = GroundTruth.from_json(footage_dir / "ground_truth.json")
    meta = json.loads((footage_dir / "ground_truth.json").read_text())
    width, height = meta["size"]
    images, labels = dataset / "images" / split, dataset / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    written = 0
    for camera, info in meta["cameras"].items():
        capture = cv2.VideoCapture(str(footage_dir / info["video"]))
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % stride == 0:
                    name = f"{prefix}{camera}_{index:06d}"
                    cv2.imwrite(str(images / f"{name}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                    rows = [
                        f"0 {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                        f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
                        for _, (x1, y1, x2, y2) in truth.boxes.get((camera, index), [])
                    ]
                    (labels / f"{name}.txt").write_text("\n".join(rows))  # empty file: a frame with nobody
                    written += 1
                index += 1
        finally:
            capture.release()
    return written


def train_detector(cache: Path, world: WorldConfig, train_dirs: list[Path], test_dir: Path, cfg: DetectorConfig) -> dict:
    """Train (or reuse) the person detector; returns its folder, image counts and held-out mAP50."""
    import ultralytics

    folder = cache_folder(
        cache, "detector", {"world": asdict(world), "detector": asdict(cfg), "ultralytics": ultralytics.__version__}
    )
    if is_complete(folder):
        return read_record(folder) | {"cached": True}
    fresh(folder)
    dataset = folder / "dataset"
    n_train = sum(write_yolo_split(d, dataset, "train", cfg.train_frame_stride, d.name) for d in train_dirs)
    n_val = write_yolo_split(test_dir, dataset, "val", cfg.val_frame_stride)
    data_yaml = dataset / "data.yaml"
    data_yaml.write_text(f"path: {dataset}\ntrain: images/train\nval: images/val\nnames:\n  0: person\n")

    from ultralytics import YOLO

    started = time.perf_counter()
    model = YOLO("yolo11n.yaml")  # architecture only: random weights, nothing to download
    model.train(
        data=str(data_yaml),
        imgsz=cfg.imgsz,
        epochs=cfg.epochs,
        batch=cfg.batch,
        nbs=cfg.batch,  # an optimiser step per batch: few images, so do not accumulate to 64
        device="cpu",
        workers=0,
        amp=False,
        plots=False,
        val=False,
        pretrained=False,
        seed=cfg.seed,
        close_mosaic=max(1, cfg.epochs // 5),
        project=str(folder / "runs"),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    train_seconds = time.perf_counter() - started
    weights = Path(model.trainer.save_dir) / "weights" / "last.pt"
    shutil.copy(weights, folder / "model.pt")  # the folder is what CAMTRACE_DETECTOR_MODEL names
    held_out = YOLO(str(folder / "model.pt")).val(
        data=str(data_yaml),
        split="val",
        imgsz=cfg.imgsz,
        batch=cfg.batch,
        device="cpu",
        workers=0,
        plots=False,
        verbose=False,
        project=str(folder / "runs"),
        name="val",
        exist_ok=True,
    )
    record = {
        "folder": str(folder),
        "train_images": n_train,
        "held_out_images": n_val,
        "epochs": cfg.epochs,
        "imgsz": cfg.imgsz,
        "map50": round(100.0 * float(held_out.box.map50), 1),
        "map50_95": round(100.0 * float(held_out.box.map), 1),
        "train_seconds": round(train_seconds, 1),
    }
    shutil.rmtree(dataset / "images")  # the frames are cheap to write again; the folder keeps the model
    mark_complete(folder, record)
    return record | {"cached": False}


# 2. The embedding model ------------------------------------------------------------------------------------


def base_embedder(cache: Path, cfg: EmbedderConfig) -> Path:
    """The randomly initialised SigLIP both models start from (the untrained baseline)."""
    from camtrace.embedding.tiny_model import build_random_siglip

    sizes = {
        k: getattr(cfg, k)
        for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "image_size", "patch_size", "seed")
    }
    folder = cache_folder(cache, "embedder-base", sizes)
    if not is_complete(folder):
        build_random_siglip(fresh(folder), **sizes)
        mark_complete(folder, sizes)
    return folder


def train_embedder(
    cache: Path,
    world: WorldConfig,
    train_dirs: list[Path],
    base: Path,
    cfg: EmbedderConfig,
    crops: str = "tight",
    detector: dict | None = None,
) -> dict:
    """Fine-tune the base with ``camtrace train`` on the training people (or reuse the cached result): on their
    tight ground-truth boxes, or (``crops`` "both") also on the trained detector's boxes as the pipeline cuts them."""
    params = {"world": asdict(world), "embedder": asdict(cfg)} | ({"crops": crops} if crops != "tight" else {})
    folder = cache_folder(cache, "embedder-trained", params)
    if is_complete(folder):
        return read_record(folder) | {"cached": True}
    out = fresh(folder) / "model"
    datasets = [f"synthetic:{d}" for d in train_dirs]
    command = train_command(datasets, out, str(base), cfg, epochs=cfg.epochs, lr=cfg.lr, crops=crops)
    return run_training(command, folder, out, cfg, detector)


def adapt_embedder(
    cache: Path, site_dir: Path, train_dirs: list[Path], model: str, cfg: EmbedderConfig, detector: dict, key: dict
) -> dict:
    """Adapt ``model`` to the test cameras: ``camtrace train`` on the site's own ingested tracks (no labels), with
    the labelled training footage mixed in to keep the text tower aligned."""
    # The text tower is frozen while adapting (the trainer's default for site: datasets since it was measured).
    folder = cache_folder(cache, "embedder-adapted", key | {"embedder": asdict(cfg), "from": model, "text": "frozen"})
    if is_complete(folder):
        return read_record(folder) | {"cached": True}
    out = fresh(folder) / "model"
    datasets = [f"site:{site_dir}", *(f"synthetic:{d}" for d in train_dirs)]
    command = train_command(datasets, out, model, cfg, epochs=max(2, cfg.epochs // 2), lr=cfg.lr / 4, crops="both")
    return run_training(command, folder, out, cfg, detector, data_dir=site_dir, serving=model)


def train_command(
    datasets: list[str], out: Path, base: str, cfg: EmbedderConfig, *, epochs: int, lr: float, crops: str
) -> list[str]:
    """``camtrace train`` on these datasets from ``base`` into ``out``, unregistered. A random start has no heads
    worth training alone: the whole model trains from the first step (``--head-epochs 0``)."""
    options = {
        "--out": out,
        "--base": base,
        "--head-epochs": 0,
        "--epochs": epochs,
        "--lr": lr,
        "--batch-size": cfg.batch_size,
        "--image-weight": cfg.image_weight,
        "--seed": cfg.seed,
        "--crops": crops,
    }
    return [
        sys.executable,
        "-m",
        "camtrace.cli",
        "train",
        *(arg for dataset in datasets for arg in ("--dataset", dataset)),
        *(str(arg) for option in options.items() for arg in option),
        "--no-register",
    ]


def run_training(
    command: list[str],
    folder: Path,
    out: Path,
    cfg: EmbedderConfig,
    detector: dict | None,
    data_dir: Path | None = None,
    serving: str | None = None,
) -> dict:
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    env = os.environ | {"CAMTRACE_DATA_DIR": str(data_dir or folder / "data")}
    if serving is not None:  # the model whose vectors the site's index holds
        env |= {"CAMTRACE_EMBED_MODEL": serving, "CAMTRACE_EMBED_PROCESSOR": ""}
    if detector is not None:  # the detector that cuts the pipeline's crops
        env |= {"CAMTRACE_DETECTOR_MODEL": detector["folder"], "CAMTRACE_DETECTOR_IMGSZ": str(detector["imgsz"])}
    subprocess.run(command, check=True, env=env)
    record = embedder_record(out, cfg, time.perf_counter() - started)
    mark_complete(folder, record)
    return record | {"cached": False}


def embedder_record(out: Path, cfg: EmbedderConfig, seconds: float) -> dict:
    """What the benchmark reports of a training run, from the ``training.json`` the trainer saves with the model."""
    run = json.loads((out / "training.json").read_text())
    return {
        "folder": str(out),
        "epochs": cfg.epochs,
        "steps": run["steps"],
        "final_loss": run["history"][-1]["loss"] if run["history"] else None,
        "val_metrics": run["val_metrics"],  # the trainer's own check on held-back training people
        "train_seconds": round(seconds, 1),
    }


# 3. Ingest and search --------------------------------------------------------------------------------------


def ingest_settings(
    data_dir: Path, detector: str, embedder: str, imgsz: int, crop_mode: str, runtime: str, tracker: str = "motion"
):
    from camtrace.settings import load_settings

    return load_settings(
        data_dir=data_dir,
        detector_model=detector,
        detector_imgsz=imgsz,
        embed_model=embedder,
        embed_processor="",  # the model folder's own processor
        runtime=runtime,
        tracker=tracker,
        search_max_results=10_000,  # whole rankings, not pages
        **CROP_MODES[crop_mode],
    )


def track_identities(services, truth: GroundTruth):
    """Ground-truth identity (or None), camera and stored detections of every indexed track."""
    from sqlalchemy import select

    from camtrace.storage.sql import Detection

    detections: dict[str, list[tuple[str, int, tuple[float, float, float, float]]]] = {}
    cameras: dict[str, str] = {}
    query = select(
        Detection.track_id, Detection.camera_id, Detection.frame_index, Detection.x1, Detection.y1, Detection.x2, Detection.y2
    )
    with services.db.engine.connect() as conn:
        for track_id, camera, frame_index, x1, y1, x2, y2 in conn.execute(query):
            detections.setdefault(track_id, []).append((camera, frame_index, (x1, y1, x2, y2)))
            cameras[track_id] = camera
    return {track: identity_of_track(rows, truth) for track, rows in detections.items()}, cameras, detections


def text_figures(search, identities: dict[str, str | None], truth: GroundTruth) -> dict:
    """Each description worn by a test person -> tracks; a track of anyone wearing it (look-alikes share one) is
    right; a description nobody's track was matched to counts as a miss."""
    rankings, relevant = [], []
    for description in sorted(set(truth.descriptions.values())):
        results = search.by_text(description, limit=max(1, len(identities)))
        wearing = [truth.descriptions.get(who) == description for who in identities.values()]
        rankings.append([truth.descriptions.get(identities.get(r.track_id)) == description for r in results])
        relevant.append(max(1, sum(wearing)))
    return ranking_figures(rankings, relevant)


def reid_figures(services, identities: dict[str, str | None], cameras: dict[str, str]) -> dict:
    """Each matched track's crops -> other cameras' tracks (best score over the query crops)."""
    from camtrace.types import SearchFilter

    index = services.index
    rankings, relevant = [], []
    for track, person in sorted(identities.items()):
        if person is None:
            continue
        gallery = [t for t, cam in cameras.items() if cam != cameras[track]]
        n_relevant = sum(1 for t in gallery if identities[t] == person)
        if n_relevant == 0:
            continue
        scores: dict[str, float] = {}
        elsewhere = SearchFilter(exclude_camera_ids=(cameras[track],))
        for point in index.track_points(track):
            for hit in index.search(point.vector, elsewhere, limit=len(gallery)):
                scores[hit.track_id] = max(scores.get(hit.track_id, -math.inf), hit.score)
        ranked = sorted(scores, key=lambda t: (-scores[t], t))
        rankings.append([identities.get(t) == person for t in ranked])
        relevant.append(n_relevant)
    return ranking_figures(rankings, relevant)


def evaluate_configuration(
    work: Path,
    test_dir: Path,
    detector: str,
    embedder: str,
    imgsz: int,
    crop_mode: str,
    runtime: str = "auto",
    tracker: str = "motion",
    study: str = "",
    keep: Path | None = None,
) -> dict:
    """Ingest the test cameras into a fresh data dir with these models, crop setting, runtime and tracker; measure
    tracking and retrieval. ``study``: "traces" adds every part of the trace (trace_study), "path" the default
    trace only, "baseline" the cosine trace only. ``keep``: a copy of the data dir as ingested, before any
    verdict (what the site adaptation learns from)."""
    from camtrace.search import SearchService
    from camtrace.search.trace import TraceMethod
    from camtrace.services import Services
    from camtrace.workers.local import ingest_local

    key = f"{embedder}|{crop_mode}|{runtime}|{tracker}"
    data_dir = work / f"data-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    settings = ingest_settings(data_dir, detector, embedder, imgsz, crop_mode, runtime, tracker)
    truth = GroundTruth.from_json(test_dir / "ground_truth.json")
    meta = json.loads((test_dir / "ground_truth.json").read_text())
    services = Services(settings)
    extra: dict = {}
    try:
        started = time.perf_counter()
        frames = crops = 0
        for camera, info in meta["cameras"].items():
            summary = ingest_local(services, str(test_dir / info["video"]), camera, info["start_ts"], progress=True)
            frames += summary.frames
            crops += summary.crops
        ingest_seconds = time.perf_counter() - started
        identities, cameras, detections = track_identities(services, truth)
        search = SearchService(services)
        with services.index.session():  # one open of the embedded shard for all the queries
            text = text_figures(search, identities, truth)
            reid = reid_figures(services, identities, cameras)
            reid_ranked = reid_by_probability(search, identities, cameras)
            seeds = trace_study.seeds_by_person(services, identities)
            if study == "baseline":
                extra["traces"] = {"cosine >= 0.7": trace_study.trace_row(search, seeds, identities, TraceMethod.SCORE, 0.7)}
            elif study == "path":
                extra["traces"] = {
                    "+ path": trace_study.trace_row(search, seeds, identities, TraceMethod.PATH, settings.trace_min_score)
                }
            elif study == "traces":
                extra.update(study_traces(search, seeds, identities, settings.trace_min_score))
        if keep is not None:
            copy_data_dir(data_dir, keep)
        if study == "traces":  # other processes open the shard: this one has let it go
            extra.update(study_shells(search, seeds, identities, data_dir, settings))
        label = services.encoder.runtime_label
    finally:
        services.close()
    return {
        "runtime": label,
        "tracker": tracker,
        "crops_per_track": settings.crops_per_track,
        "frames": frames,
        "crops": crops,
        "tracks": len(identities),
        "false_tracks": sum(1 for who in identities.values() if who is None),
        "people_found": len({who for who in identities.values() if who is not None}),
        "people": len(truth.descriptions),
        "crossings": crossing_figures(detections, truth),
        "ingest_seconds": round(ingest_seconds, 1),
        "text": text,
        "reid": reid,
        "reid_by_probability": reid_ranked,
        **extra,
    }


def copy_data_dir(data_dir: Path, copy: Path) -> None:
    """A copy of a data dir this process has open. The SQLite file goes through SQLite's backup API: copying it as a
    file would open and close it here, and closing any descriptor of a file drops every POSIX lock the process holds
    on it, SQLite's included (other processes then checkpoint under this one's readers, which read a malformed
    database)."""
    import contextlib
    import sqlite3

    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("camtrace.db*"))
    with contextlib.closing(sqlite3.connect(data_dir / "camtrace.db")) as source:
        with contextlib.closing(sqlite3.connect(copy / "camtrace.db")) as target:
            source.backup(target)


def reid_by_probability(search, identities: dict[str, str | None], cameras: dict[str, str]) -> dict:
    """What "find this person elsewhere" answers: each matched track's candidates on other cameras, ranked by the
    probability of being the same person (appearance, camera links, transit)."""
    rankings, relevant = [], []
    for track, person in sorted(identities.items()):
        if person is None:
            continue
        n_relevant = sum(1 for t, who in identities.items() if who == person and cameras[t] != cameras[track])
        if n_relevant == 0:
            continue
        results = search.reid(track, limit=search.max_results)
        rankings.append([identities.get(r.track_id) == person for r in results])
        relevant.append(n_relevant)
    return ranking_figures(rankings, relevant)


CONFIRMED_PEOPLE = 8  # people whose traces an investigator works through before the others are measured again


def study_traces(search, seeds: dict[str, str], identities, bar: float) -> dict:
    """Every part of the trace and the calibration, in this process."""
    traces = trace_study.trace_rows(search, seeds, identities, bar)
    return {"traces": traces, "calibration": trace_study.calibration(search, identities)}


def study_shells(search, seeds: dict[str, str], identities, data_dir: Path, settings) -> dict:
    """The same traces over HTTP and the CLI, then an investigator's verdicts on some people and the others'
    traces again (the verdicts come last: everything before is measured without them)."""
    from camtrace.search.trace import TraceMethod

    env = trace_study.environment(data_dir, settings)
    study: dict = {"http": trace_study.http_trace_figures(env, seeds, identities)}
    agree, asked = trace_study.cli_agrees(env, search, seeds)
    study["cli_agrees"] = f"{agree}/{asked}"
    people = sorted(seeds)[:CONFIRMED_PEOPLE]
    others = {person: seed for person, seed in seeds.items() if person not in people}
    before = trace_study.trace_row(search, others, identities, TraceMethod.PATH, settings.trace_min_score)
    verdicts = trace_study.investigator_confirms(search, seeds, identities, people)
    after = trace_study.trace_row(search, others, identities, TraceMethod.PATH, settings.trace_min_score)
    study["confirmed"] = {
        "people": len(people),
        "verdicts": verdicts,
        "others_before": before,
        "others_after": after,
        "calibration_after": trace_study.calibration(search, {t: who for t, who in identities.items() if who not in people}),
    }
    return study


# How the image side runs for the ground-truth crop figures: PyTorch fp32 (the reference), bf16 and ONNX int8.
NUMBER_FORMATS = ("torch fp32", "torch bf16", "onnx int8")


def crop_figures(test_dir: Path, model: str, number_format: str = "torch fp32", exports: Path | None = None) -> dict:
    """The ``camtrace eval`` protocols on ground-truth crops of every test person: the model alone, without
    detector, tracker or crop selection (text -> identity, and image re-id across cameras)."""
    from dataclasses import replace

    import torch

    from camtrace.embedding import ImageTextEncoder
    from camtrace.training.datasets import PersonDataset, load_dataset
    from camtrace.training.evaluate import evaluate_model

    footage = load_dataset(f"synthetic:{test_dir}")
    # The loader splits a footage's people into train/val/test; here every person is a test person.
    everyone = PersonDataset([replace(s, split="test") for s in footage.samples], name=f"{footage.name} (everyone)")
    runtime = number_format.split()[0]
    encoder = ImageTextEncoder(model, None, device="cpu", runtime=runtime, exports_dir=exports, onnx_quantize="int8")
    try:
        if number_format == "torch bf16":
            # The GPU default's number format (weights and activations in bf16), emulated on the CPU.
            encoder.load()
            torch_model = encoder.vision.torch_model
            torch_model.model.to(torch.bfloat16)
            torch_model.dtype = torch.bfloat16
        return evaluate_model(encoder, everyone, batch_size=64) | {"images": len(everyone), "runtime": number_format}
    finally:
        encoder.unload()


# Report ----------------------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "  -  " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:5.1f}"


def print_table(report: dict) -> None:
    det = report["detector"]
    print()
    world = report["world"]
    print(
        f"world: {world['cameras']} cameras; training: {world['train_footages']} footages x "
        f"{world['train_identities']} people x {world['train_seconds']:.0f} s; test: {world['test_identities']} "
        f"other people, {world['test_seconds']:.0f} s per camera"
    )
    print(
        f"detector: yolo11n from scratch, {det['epochs']} epochs at {det['imgsz']} px on {det['train_images']} "
        f"frames: mAP50 {det['map50']:.1f}, mAP50-95 {det['map50_95']:.1f} on {det['held_out_images']} held-out "
        "frames"
    )
    header = (
        f"{'embedder':<10} {'crops':<11} {'runtime':<15} {'tracker':<9} {'K':>6} {'tracks':>6} {'false':>5} "
        f"{'found':>5} {'cross%':>6} {'t/cr':>4} | {'txt@1':>5} {'txt@5':>5} | {'rid@1':>5} {'ridAP':>5} | "
        f"{'pid@1':>5} {'pidAP':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        crossing = row["crossings"]
        print(
            f"{row['embedder']:<10} {row['crop_mode']:<11} {row['runtime']:<15} {row['tracker'].split('.')[0]:<9} "
            f"{row['crops_per_track']:>6} {row['tracks']:>6} {row['false_tracks']:>5} "
            f"{row['people_found']:>2}/{row['people']:<2} {fmt(crossing['found_pct']):>6} "
            f"{crossing['tracks_per_crossing']:4.2f} | {fmt(row['text']['top1'])} {fmt(row['text']['top5'])} | "
            f"{fmt(row['reid']['top1'])} {fmt(row['reid']['map'])} | {fmt(row['reid_by_probability']['top1'])} "
            f"{fmt(row['reid_by_probability']['map'])}"
        )
    print(
        "cross%: walks across a view that left a track; t/cr: tracks per such walk; rid: re-id ranked by score; "
        "pid: ranked by probability (camera links)"
    )
    print_embedders(report)
    print_traces(report)
    for name, figures in report["ground_truth_crops"].items():
        text, reid = figures["text_to_identity"] or {}, figures["image_reid"] or {}
        print(
            f"{name} model on {figures['images']} ground-truth crops of the test people (camtrace eval protocols):"
            f" text->identity Top-1 {fmt(text.get('top1'))}, Top-5 {fmt(text.get('top5'))}; "
            f"image re-id Top-1 {fmt(reid.get('top1'))}, mAP {fmt(reid.get('map'))}"
        )
    print_runtime_guard(report)
    # The first row of each (embedder, crop setting): the default runtime.
    by_key: dict[tuple[str, str], dict] = {}
    for row in report["rows"]:
        by_key.setdefault((row["embedder"], row["crop_mode"]), row)
    for mode in CROP_MODES:
        trained, untrained = by_key.get(("trained", mode)), by_key.get(("untrained", mode))
        if trained and untrained:
            print(
                f"trained - untrained ({mode}): text Top-1 {trained['text']['top1'] - untrained['text']['top1']:+.1f}"
                f", re-id mAP {trained['reid']['map'] - untrained['reid']['map']:+.1f} points"
            )


def print_embedders(report: dict) -> None:
    """What each way of training the embedder does where it runs: re-id, traces and text search in the pipeline."""
    rows = [
        row
        for row in report["rows"]
        if row["crop_mode"] == "K best" and row["tracker"] == "motion" and row["runtime"].startswith("onnx") and row.get("traces")
    ]
    if not rows:
        return
    print("\nembedders in the pipeline (default settings; trace: each person's longest track, the default path):")
    labels = {
        "untrained": "untrained (random start)",
        "tight": "trained on ground-truth boxes",
        "trained": "trained on boxes + detector crops (default)",
        "adapted": "+ adapted to the site (no labels)",
    }
    for row in rows:
        trace = row["traces"].get("+ path") or {}
        print(
            f"  {labels.get(row['embedder'], row['embedder']):<44} re-id Top-1 {fmt(row['reid']['top1'])} "
            f"mAP {fmt(row['reid']['map'])} | by probability Top-1 {fmt(row['reid_by_probability']['top1'])} "
            f"mAP {fmt(row['reid_by_probability']['map'])} | trace F1 {fmt(trace.get('f1'))} | text Top-1 "
            f"{fmt(row['text']['top1'])} Top-5 {fmt(row['text']['top5'])}"
        )


def print_traces(report: dict) -> None:
    """Trace precision, recall and F1 part by part (one seed per person), calibration, and after verdicts."""
    baseline = next((row for row in report["rows"] if row["tracker"] != "motion" and "traces" in row), None)
    studied = next((row for row in report["rows"] if "calibration" in row), None)
    if studied is None:
        return
    print("\ntrace from each person's longest track (precision / recall / F1 of the average precision and recall):")
    lines = []
    if baseline is not None:
        lines.append(("ByteTrack, cosine >= 0.7 (before)", baseline["traces"]["cosine >= 0.7"]))
    for name, figures in studied["traces"].items():
        lines.append((f"motion tracker, {name}", figures))
    lines.append(("+ path, over HTTP (camtrace serve)", studied["http"]))
    for name, figures in lines:
        print(
            f"  {name:<40} P {fmt(figures['precision'])}  R {fmt(figures['recall'])}  F1 {fmt(figures['f1'])}"
            f"  ({figures['seeds']} seeds)"
        )
    confirmed = studied["confirmed"]
    before, after = confirmed["others_before"], confirmed["others_after"]
    print(
        f"  other people after an investigator decided {confirmed['people']} people's traces "
        f"({confirmed['verdicts']} verdicts): F1 {fmt(before['f1'])} -> {fmt(after['f1'])} "
        f"(P {fmt(before['precision'])} -> {fmt(after['precision'])}, R {fmt(before['recall'])} -> "
        f"{fmt(after['recall'])}); camtrace trace --json agreed on {studied['cli_agrees']} seeds"
    )
    for name, table in (
        ("no verdicts", studied["calibration"]),
        ("after the verdicts, other people", confirmed["calibration_after"]),
    ):
        print(
            f"calibration of re-id's probability, {name}: ECE {100 * table['ece']:.1f} points over "
            f"{table['pairs']} candidate pairs (top 20 per track, other cameras)"
        )
        for row in table["table"]:
            print(f"    {row['bin']}: {row['pairs']:>5} pairs, predicted {row['predicted']:.2f}, observed {row['observed']:.2f}")


def print_runtime_guard(report: dict) -> None:
    """Each fast path's change against PyTorch fp32 on the trained model, and whether it stays within 0.5 points."""
    crops = report["ground_truth_crops"]
    reference = crops["trained"]
    for number_format in NUMBER_FORMATS[1:]:
        figures = crops.get(f"trained, {number_format}")
        if figures is None:
            continue
        deltas = {
            "text Top-1": figures["text_to_identity"]["top1"] - reference["text_to_identity"]["top1"],
            "re-id Top-1": figures["image_reid"]["top1"] - reference["image_reid"]["top1"],
            "re-id mAP": figures["image_reid"]["map"] - reference["image_reid"]["map"],
        }
        # A gain is no loss of quality (on a small gallery one query moves Top-1 by more than 0.5 points).
        kept = all(delta >= -0.5 for delta in deltas.values())
        print(
            f"trained, {number_format} - fp32 on ground-truth crops: "
            + ", ".join(f"{name} {delta:+.2f}" for name, delta in deltas.items())
            + f" points: {'loses at most 0.5' if kept else 'LOSES MORE THAN 0.5'}"
        )
    pipeline = [
        row
        for row in report["rows"]
        if row["embedder"] == "trained" and row["crop_mode"] == "K best" and row["tracker"] == "motion"
    ]
    if len(pipeline) == 2:
        fast, fp32 = pipeline
        print(
            f"trained, K best, {fast['runtime']} - {fp32['runtime']} in the pipeline: text Top-1 "
            f"{fast['text']['top1'] - fp32['text']['top1']:+.1f}, Top-5 {fast['text']['top5'] - fp32['text']['top5']:+.1f}, "
            f"re-id Top-1 {fast['reid']['top1'] - fp32['reid']['top1']:+.1f}, "
            f"mAP {fast['reid']['map'] - fp32['reid']['map']:+.1f} points"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small world and short training, for development")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "camtrace" / "bench_quality",
        help="trained models and footage, reused by later runs",
    )
    parser.add_argument("--json", type=Path, help="also write the table and its parameters to this JSON file")
    parser.add_argument("--work", type=Path, help="data dirs of the ingests (default: a folder in the cache)")
    args = parser.parse_args()

    preset = PRESETS["quick" if args.quick else "full"]
    cache = args.cache.expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = (args.work or cache / "runs").resolve()
    # Ultralytics stays offline, with its settings file in the cache, before it is first imported.
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache / "ultralytics"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    began = time.perf_counter()
    train_dirs, test_dir = build_world(cache, preset.world)
    print(f"[{time.perf_counter() - began:6.0f} s] world ready: {test_dir.parent}", flush=True)
    detector = train_detector(cache, preset.world, train_dirs, test_dir, preset.detector)
    print(
        f"[{time.perf_counter() - began:6.0f} s] detector ready (mAP50 {detector['map50']:.1f}"
        f"{', cached' if detector['cached'] else ''})",
        flush=True,
    )
    base = base_embedder(cache, preset.embedder)
    tight = train_embedder(cache, preset.world, train_dirs, base, preset.embedder)
    both = train_embedder(cache, preset.world, train_dirs, base, preset.embedder, crops="both", detector=detector)
    print(f"[{time.perf_counter() - began:6.0f} s] embedders ready{' (cached)' if both['cached'] else ''}", flush=True)

    # "trained": camtrace train's default (ground-truth boxes and the detector's crops); "tight": boxes only.
    models = {"untrained": str(base), "tight": tight["folder"], "trained": both["folder"]}
    crop_level = {name: crop_figures(test_dir, folder) for name, folder in models.items()}
    for number_format in NUMBER_FORMATS[1:]:
        crop_level[f"trained, {number_format}"] = crop_figures(test_dir, models["trained"], number_format, work / "exports")
    print(f"[{time.perf_counter() - began:6.0f} s] ground-truth crops measured", flush=True)
    # (embedder, crop setting, runtime, tracker, study): the default trained row studies traces part by part (and
    # is what the site adaptation starts from), the ByteTrack row measures traces as they were built before.
    plan = [
        ("untrained", "K best", "auto", "motion", "path"),
        ("tight", "K best", "auto", "motion", "path"),
        ("trained", "K best", "auto", "motion", "traces"),
        ("trained", "1 crop", "auto", "motion", ""),
        ("trained", "every crop", "auto", "motion", ""),
        ("trained", "K best", "torch", "motion", ""),  # the quality guard in the pipeline: PyTorch fp32
        ("trained", "K best", "auto", "bytetrack.yaml", "baseline"),
    ]
    if args.quick:
        plan = [step for step in plan if step[1] == "K best" and step[2] == "auto"]
    rows = []

    def measure(name: str, mode: str, runtime: str, tracker: str, study: str, keep: Path | None = None) -> None:
        row = evaluate_configuration(
            work,
            test_dir,
            detector["folder"],
            models[name],
            preset.detector.imgsz,
            mode,
            runtime=runtime,
            tracker=tracker,
            study=study,
            keep=keep,
        )
        rows.append({"embedder": name, "crop_mode": mode, **row})
        print(
            f"[{time.perf_counter() - began:6.0f} s] {name} / {mode} / {row['runtime']} / {tracker}: text Top-1 "
            f"{row['text']['top1']:.1f}, re-id mAP {row['reid']['map']:.1f}, crossings found "
            f"{row['crossings']['found_pct']:.1f}%",
            flush=True,
        )

    site = work / "site-ingested"  # the test cameras as the default trained model indexed them, before any verdict
    for step in plan:
        measure(*step, keep=site if step[0] == "trained" and step[4] == "traces" else None)
    # Site adaptation: the default trained model learns the test cameras' own tracks (no labels), then ingests
    # them again.
    adapted = adapt_embedder(
        cache,
        site,
        train_dirs,
        models["trained"],
        preset.embedder,
        detector,
        {"world": asdict(preset.world), "detector": detector["folder"]},
    )
    models["adapted"] = adapted["folder"]
    crop_level["adapted"] = crop_figures(test_dir, models["adapted"])
    measure("adapted", "K best", "auto", "motion", "path")

    report = {
        "preset": "quick" if args.quick else "full",
        "world": asdict(preset.world),
        "detector": {k: v for k, v in detector.items() if k != "cached"},
        "embedder": {"base": asdict(preset.embedder), "tight": tight, "trained": both, "adapted": adapted},
        "ground_truth_crops": crop_level,
        "rows": rows,
        "seconds": round(time.perf_counter() - began, 1),
    }
    print_table(report)
    print(f"total {report['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
