"""Runtimes: ONNX Runtime and PyTorch run the same tiny checkpoints, loaded through the same code as real weights;
exports are built once per model version, shared by processes, and rebuilt when corrupt or stale."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from embedding_fixtures import make_crops

from camtrace.detection import PersonDetector, SegmentTracker, VideoSource, track_frames
from camtrace.detection.detector import trained_imgsz
from camtrace.embedding import ImageTextEncoder
from camtrace.embedding.gpu import DevicePixelTransform
from camtrace.exports import MANIFEST, check_export, export_folder
from camtrace.services import Services
from camtrace.settings import Settings


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def onnx_encoder(folder: Path, exports: Path, quantize: str = "fp32") -> ImageTextEncoder:
    return ImageTextEncoder(folder, None, device="cpu", batch_size=8, runtime="onnx", exports_dir=exports, onnx_quantize=quantize)


def vision_export(exports: Path, encoder: ImageTextEncoder) -> Path:
    folders = list((exports).glob(f"*/vision-{encoder.onnx_quantization}"))
    assert len(folders) == 1, folders
    return folders[0]


# Embedding ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    return make_crops(12, seed=5)


@pytest.fixture(scope="module")
def torch_vectors(tiny_siglip_dir: Path, crops) -> np.ndarray:
    return ImageTextEncoder(tiny_siglip_dir, None, device="cpu", batch_size=8).encode_images(crops)


def test_onnx_fp32_and_int8_agree_with_pytorch_and_text_loads_only_when_asked(tiny_siglip_dir, tmp_path, crops, torch_vectors):
    fp32 = onnx_encoder(tiny_siglip_dir, tmp_path, "fp32")
    vectors = fp32.encode_images(crops)
    assert fp32.runtime_label == "onnx fp32"
    assert cosines(vectors, torch_vectors).min() >= 0.999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not fp32.text.torch_model.loaded  # no PyTorch weights for images

    text = fp32.encode_texts(["woman, red coat"])  # the text side loads now, on PyTorch
    reference_encoder = ImageTextEncoder(tiny_siglip_dir, None, device="cpu")
    reference = reference_encoder.encode_texts(["woman, red coat"])
    assert reference_encoder.runtime_label == "torch fp32"
    assert fp32.text.torch_model.loaded
    np.testing.assert_allclose(text, reference, atol=1e-5)

    int8 = onnx_encoder(tiny_siglip_dir, tmp_path, "auto")
    quantised = int8.encode_images(crops)
    assert int8.runtime_label == "onnx int8"
    assert cosines(quantised, torch_vectors).min() >= 0.99
    # One crop per run: a crop's int8 vector does not depend on the crops batched with it.
    alone = np.concatenate([int8.encode_images([crop]) for crop in crops[:3]])
    np.testing.assert_array_equal(alone, quantised[:3])


def spinning(session) -> str:
    return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")


def test_onnx_sessions_run_on_the_set_threads_without_spinning(
    tiny_siglip_dir, tiny_yolo_dir, tmp_path, crops, torch_threads_restored
):
    settings = Settings(
        data_dir=tmp_path, embed_model=str(tiny_siglip_dir), detector_model=str(tiny_yolo_dir), device="cpu", cpu_threads=1
    )
    encoder = ImageTextEncoder.from_settings(settings)
    encoder.encode_images(crops[:2])
    session = encoder.vision.session
    assert session.get_session_options().intra_op_num_threads == 1 and spinning(session) == "0"

    detector = PersonDetector.from_settings(settings)
    before = detector.detect([np.full((240, 320, 3), 90, np.uint8)])
    session = detector._model.predictor.model.backend.session  # the session Ultralytics' predictor runs
    assert session.get_session_options().intra_op_num_threads == 1 and spinning(session) == "0"
    assert torch.get_num_threads() == 1  # and PyTorch (text side, torch runtime) too
    assert len(before) == 1 and before[0].shape[1] == 6


def test_settings_pick_onnx_on_cpu_and_the_vector_size_needs_no_weights(tiny_siglip_dir, tiny_yolo_dir, tmp_path):
    settings = Settings(data_dir=tmp_path, embed_model=str(tiny_siglip_dir), detector_model=str(tiny_yolo_dir), device="cpu")
    services = Services(settings)
    try:
        assert services.encoder.runtime == "onnx" and services.detector.runtime == "onnx"
        assert services.index.count() == 0
        assert not services.encoder.loaded and services.encoder.dim == 32  # from config.json
        assert not (tmp_path / "exports").exists()  # reading the index built nothing
    finally:
        services.close()
    on_torch = Settings(data_dir=tmp_path, embed_model=str(tiny_siglip_dir), device="cpu", runtime="torch")
    assert ImageTextEncoder.from_settings(on_torch).runtime == "torch"


def test_an_export_is_built_once_and_reused(tiny_siglip_dir, tmp_path, crops, caplog):
    first = onnx_encoder(tiny_siglip_dir, tmp_path)
    first.load()
    folder = vision_export(tmp_path, first)
    built_at = (folder / MANIFEST).stat().st_mtime_ns
    caplog.clear()
    second = onnx_encoder(tiny_siglip_dir, tmp_path)
    second.load()
    assert (folder / MANIFEST).stat().st_mtime_ns == built_at
    assert not [r for r in caplog.records if "building" in r.getMessage()]


def test_two_processes_starting_together_build_one_export(tmp_path):
    # The cache's own code in two real processes; the build is slow enough (1 s) for them to meet at the lock.
    code = textwrap.dedent(
        f"""
        import logging, os, sys, time
        from pathlib import Path
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from camtrace.exports import ExportSpec, ensure_export

        def build(work):
            time.sleep(1.0)
            (work / "out.bin").write_bytes(b"model of pid %d" % os.getpid())
            return work / "out.bin"

        while time.time() < float(sys.argv[1]):  # start together
            time.sleep(0.005)
        spec = ExportSpec("vision-int8", "tiny@123", "onnxruntime", "int8", "model.bin", {{"image_size": 32}})
        path = ensure_export(Path({str(tmp_path)!r}), spec, build, "the test export")
        print(path.read_bytes().decode())
        """
    )
    start = f"{__import__('time').time() + 1.5}"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    stderr = "".join(err for _, err in outputs)
    assert stderr.count("building the test export") == 1, stderr
    assert outputs[0][0] == outputs[1][0]  # the second process uses the first one's file


def test_a_corrupt_or_stale_export_is_rebuilt_never_used(tiny_siglip_dir, tmp_path, crops, caplog):
    encoder = onnx_encoder(tiny_siglip_dir, tmp_path)
    expected = encoder.encode_images(crops)
    folder = vision_export(tmp_path, encoder)
    model_file = folder / "vision.onnx"

    # Truncated: the checksum catches it before ONNX Runtime would read it.
    with model_file.open("r+b") as fh:
        fh.truncate(model_file.stat().st_size // 2)
    assert "bytes" in check_export(folder, json_spec(folder))
    caplog.clear()
    np.testing.assert_allclose(onnx_encoder(tiny_siglip_dir, tmp_path).encode_images(crops), expected, atol=1e-6)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert check_export(folder, json_spec(folder)) is None

    # Same size, other bytes: still caught.
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    assert "checksum" in check_export(folder, json_spec(folder))
    onnx_encoder(tiny_siglip_dir, tmp_path).load()
    assert check_export(folder, json_spec(folder)) is None

    # Stale: a manifest from another model version or other options is never trusted.
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "options": {"image_size": 999}}))
    caplog.clear()
    np.testing.assert_allclose(onnx_encoder(tiny_siglip_dir, tmp_path).encode_images(crops), expected, atol=1e-6)
    assert any("stale" in r.getMessage() for r in caplog.records)
    assert json.loads((folder / MANIFEST).read_text())["options"]["image_size"] == 32


def json_spec(folder: Path):
    """The spec a valid export in ``folder`` must match (what the encoder asks for)."""
    from camtrace.exports import ExportSpec

    manifest = json.loads((folder / MANIFEST).read_text())
    fields = {k: manifest[k] for k in ("name", "source_version", "runtime", "quantization", "file_name")}
    spec = ExportSpec(**fields, options={"image_size": 32, "output": "l2-normalised pooled image embedding"})
    assert export_folder(folder.parent.parent, spec) == folder
    return spec


def test_gpu_preprocessing_matches_the_processor(tiny_siglip_dir, crops, torch_vectors):
    encoder = ImageTextEncoder(tiny_siglip_dir, None, device="cpu", batch_size=8)
    encoder.load()
    vision = encoder.vision
    transform = DevicePixelTransform.from_processor(vision.image_processor, torch.device("cpu"), torch.float32)
    assert transform is not None and transform.size == (32, 32)
    vision.pixel_transform = transform  # what a CUDA device gets, run here on the CPU
    on_device = encoder.encode_images(crops)
    assert cosines(on_device, torch_vectors).min() >= 0.99


# Detector -------------------------------------------------------------------------------------------------


def input_sizes(detector: PersonDetector, image: np.ndarray) -> list[tuple[int, ...]]:
    """Shapes of the tensors the PyTorch network was actually given for ``image``."""
    seen: list[tuple[int, ...]] = []
    network = detector._model.model
    hook = network.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    try:
        detector.detect([image])
    finally:
        hook.remove()
    return seen


def test_the_input_size_defaults_to_the_training_size_and_the_setting_overrides_it(tiny_yolo_dir, tmp_path):
    # A checkpoint whose train args say 256 px (the tiny model's own say 320).
    ckpt = torch.load(tiny_yolo_dir / "model.pt", weights_only=False)
    ckpt["train_args"] = {**ckpt["train_args"], "imgsz": 256}
    (tmp_path / "w256").mkdir()
    torch.save(ckpt, tmp_path / "w256" / "model.pt")
    image = np.zeros((360, 640, 3), np.uint8)

    for folder, setting, expected in ((tiny_yolo_dir, None, 320), (tmp_path / "w256", None, 256), (tmp_path / "w256", 416, 416)):
        settings = Settings(data_dir=tmp_path, detector_model=str(folder), detector_imgsz=setting, device="cpu", runtime="torch")
        detector = PersonDetector.from_settings(settings)
        assert detector.imgsz == expected
        assert trained_imgsz(detector._model) == (256 if folder != tiny_yolo_dir else 320)
        shapes = input_sizes(detector, image)
        assert shapes and max(shapes[0][2:]) == expected  # letterboxed to that size (long side)
        assert detector._model.predictor.args.imgsz == expected


def test_onnx_detector_gives_the_same_boxes_and_tracks(tiny_yolo_dir, tmp_path, footage):
    torch_detector = PersonDetector(str(tiny_yolo_dir), conf=0.25, max_det=6, batch_size=4)
    onnx_detector = PersonDetector(str(tiny_yolo_dir), conf=0.25, max_det=6, batch_size=4, runtime="onnx", exports_dir=tmp_path)
    with VideoSource(str(footage.videos["cam1"])) as source:
        frames = list(source.frames(5.0, 0, 40))
    expected = torch_detector.detect([f.image for f in frames])
    got = onnx_detector.detect([f.image for f in frames])
    assert onnx_detector.runtime_label == "onnx fp32" and onnx_detector.imgsz == 320
    assert sum(len(d) for d in got) > 0
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=0.05)

    tracks = {}
    for detector in (torch_detector, onnx_detector):
        tracked = track_frames(detector, frames, SegmentTracker("bytetrack.yaml", frame_rate=5.0))
        tracks[detector.runtime] = [(f.index, b.local_track_id, b.box) for f, boxes in tracked for b in boxes]
    assert len({track_id for _, track_id, _ in tracks["onnx"]}) >= 2
    assert [row[:2] for row in tracks["onnx"]] == [row[:2] for row in tracks["torch"]]
    np.testing.assert_allclose([row[2] for row in tracks["onnx"]], [row[2] for row in tracks["torch"]], atol=0.05)
