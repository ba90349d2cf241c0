"""A tiny, randomly initialised Ultralytics YOLO detector that still produces boxes.

Tests and demos must not download weights, so they build this model from the
``yolo11n.yaml`` shipped inside the ultralytics package (narrower and
shallower than ``n``) and load it through the same code as real weights
(``YOLO(path)`` / ``PersonDetector(folder)``).

A randomly initialised network detects nothing useful, and out of the box it
returns no boxes at all, so four things are set by hand, all deterministic:

1. BatchNorm: gains are set to ``BN_GAIN`` (0.1) and biases to 0, and the
   running statistics are calibrated on a few seeded noise images (one
   forward pass in train mode with cumulative averages). Without calibration
   the activations of a random network shrink by orders of magnitude per block
   and the head sees zeros; with unit gains the random network is chaotic (a
   +-2 grey-level change, i.e. MP4 noise, changes its features as much as a new
   scene), so boxes would flicker and never form tracks. Small pre-activations
   keep SiLU almost linear, so features become smooth functions of the image.
2. Classification head (last 1x1 conv of ``cv3``): only the coarsest level
   (stride 32) may fire; the finer levels get zero weights and a bias of -20.
   At stride 32 the weights are rescaled so the class-0 logit spreads by
   ``LOGIT_SPREAD`` over anchors (not zero: confidence keeps varying with the
   image, so a figure walking through a cell changes what is detected there),
   and the bias makes about ``FIRING_FRACTION`` of the calibration anchors
   score above ``FIRE_CONF``. High confidences matter: ByteTrack fuses IoU with
   the score, and scores near 0.3 never confirm a new track.
3. Box head (last 1x1 conv of ``cv2``): the DFL logits get a bias shaped as a
   narrow bump (``DFL_SIGMA`` bins wide) around ``BOX_STRIDES`` (left, top,
   right, bottom distances in strides): a person-shaped box one stride wide
   and two strides tall around the anchor (64 x 128 source pixels for a 640
   pixel wide frame at imgsz 320). The weights are rescaled to a spread of
   ``BOX_LOGIT_SPREAD`` (not zero), so box edges move a few pixels with the
   content instead of being frozen to the anchor grid.
4. Class 0 is named ``person``.

What it does on synthetic frames (``camtrace.synthetic``, 640x360, imgsz 320,
conf 0.25, max_det 6): about six boxes on every frame, confidences about
0.3-0.95, four to five of them clear of the frame border, and ByteTrack tracks
that often last a whole 4 s segment at 5 fps. The boxes follow the (static,
textured) background more than the figures: it is a random network, not a
person detector, so tests must not expect its boxes to sit on the figures.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

MODEL_FILE = "model.pt"
BASE_YAML = "yolo11n.yaml"
SCALE = [0.33, 0.125, 256]  # depth, width, max channels: about 1/10 of yolo11n's compute
N_SCALE = [0.50, 0.25, 1024]  # yolo11n's own (yolo11.yaml "n")
BOX_STRIDES = (0.5, 1.0, 0.5, 1.0)  # DFL distances l, t, r, b in strides: a 1 x 2 stride box
DFL_SIGMA = 0.6  # width of the bump in DFL bins
BOX_LOGIT_SPREAD = 0.3  # std of the DFL logits' content-dependent part
FIRE_CONF = 0.5  # confidence that about FIRING_FRACTION of anchors exceed
LOGIT_SPREAD = 2.0  # std of the class-0 logit over anchors at stride 32
FIRING_FRACTION = 0.1  # share of stride-32 anchors above FIRE_CONF on calibration images
CALIBRATION_SIZE = 320
BN_GAIN = 0.1  # pre-activation std after each BatchNorm: small, so SiLU acts nearly linearly (no chaos)


def build_tiny_yolo(folder: Path, seed: int = 0, scale: list[float] | None = None, imgsz: int = CALIBRATION_SIZE) -> Path:
    """Build the tiny person detector into ``folder/model.pt`` (returns ``folder``); reuses an existing build.

    ``scale`` (depth, width, max channels) and ``imgsz`` give other sizes of the same
    construction, e.g. ``N_SCALE`` at 640 px: yolo11n's compute for benchmarks.
    """
    import torch
    from ultralytics import __version__ as ultralytics_version
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MODEL_FILE
    if target.is_file():
        return folder

    cfg = yaml_model_load(BASE_YAML)
    cfg["scales"] = {"n": scale or SCALE}
    cfg["nc"] = 1
    with torch.random.fork_rng(devices=[]):  # seeded build without disturbing the caller's random state
        torch.manual_seed(seed)
        model = DetectionModel(cfg, nc=1, verbose=False)
    model.names = {0: "person"}
    head = model.model[-1]

    images = _calibration_images(seed, imgsz)
    _calibrate_batchnorm(model, images)
    coarse = head.nl - 1
    with torch.no_grad():
        for level in range(head.nl):
            cls_conv = head.cv3[level][-1]
            box_conv = head.cv2[level][-1]
            if level == coarse:
                logits = _conv_output(model, images, cls_conv)[:, 0]
                cls_conv.weight.mul_(LOGIT_SPREAD / max(float(logits.std()), 1e-6))
                z = _conv_output(model, images, cls_conv)[:, 0]
                threshold = float(torch.quantile(z.flatten(), 1.0 - FIRING_FRACTION))
                cls_conv.bias.fill_(math.log(FIRE_CONF / (1 - FIRE_CONF)) - threshold)
            else:
                cls_conv.weight.zero_()
                cls_conv.bias.fill_(-20.0)
            box_out = _conv_output(model, images, box_conv)
            box_conv.weight.mul_(BOX_LOGIT_SPREAD / max(float(box_out.std(dim=(0, 2, 3)).mean()), 1e-6))
            box_conv.bias.copy_(_dfl_bias(head.reg_max))

    model.args = {"task": "detect", "imgsz": imgsz}
    model.task = "detect"
    checkpoint = {
        "model": model.float().eval(),
        "ema": None,
        "train_args": {"task": "detect", "imgsz": imgsz},
        "date": datetime.now(UTC).isoformat(),
        "version": ultralytics_version,
        "note": "tiny randomly initialised person detector for tests (camtrace.detection.tiny_model)",
    }
    tmp = target.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(target)  # atomic: a parallel test process never sees half a file
    return folder


def _calibration_images(seed: int, size: int = CALIBRATION_SIZE) -> np.ndarray:
    """Seeded multi-scale noise, RGB in [0, 1], shape (8, 3, size, size)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(8):
        img = np.zeros((size, size, 3), np.float32)
        for cell in (4, 16, 64):
            noise = rng.normal(0, 1, (size // cell + 1, size // cell + 1, 3)).astype(np.float32)
            img += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
        out.append(np.clip(0.5 + 0.12 * img, 0, 1))
    return np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2))


def _calibrate_batchnorm(model, images: np.ndarray) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.fill_(BN_GAIN)
            module.bias.data.zero_()
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images))
    model.eval()


def _conv_output(model, images: np.ndarray, conv):
    """Output of ``conv`` without its bias when ``model`` runs on ``images``."""
    import torch

    captured = {}
    hook = conv.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    try:
        with torch.no_grad():
            model(torch.from_numpy(images))
    finally:
        hook.remove()
    return captured["out"] - conv.bias.view(1, -1, 1, 1)


def _dfl_bias(reg_max: int):
    """DFL logits: a bump around each of ``BOX_STRIDES``, so the softmax expectation sits near it."""
    import torch

    bins = torch.arange(reg_max, dtype=torch.float32)
    rows = [-((bins - distance) ** 2) / (2 * DFL_SIGMA**2) for distance in BOX_STRIDES]
    return torch.stack(rows).flatten()
