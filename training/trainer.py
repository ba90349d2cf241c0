"""Fine-tuning of a SigLIP/SigLIP2/CLIP checkpoint on person datasets (the model card's recipe).

Schedule: first the heads only (SigLIP: the vision and text pooling heads, the
logit scale and bias; CLIP: the two projections and the logit scale) for
``head_epochs`` at ``head_lr``, then the whole model for ``epochs`` at ``lr``;
AdamW, a linear warm-up over the first ``warmup_ratio`` of each stage then a
cosine decay. On CUDA the forward pass runs under bf16 autocast (weights stay
float32) and gradients may be accumulated over several batches.

Batches hold P identities x K images (``images_per_identity``), so the loss
sees identity pairs. Every random choice (batch plan, augmentation, text
feature dropout) is derived from ``(seed, epoch)`` or ``(seed, step)``: a run
resumed from a checkpoint draws exactly what the uninterrupted run drew.
Checkpoints (model, optimizer, scheduler, sampler position, RNG state, step)
are written every ``checkpoint_every`` steps under ``OUT/checkpoints``; a run
whose out dir holds one resumes from it. The finished model is saved with
``save_pretrained`` (model and processor), so ``AutoModel`` /
``AutoProcessor`` / ``ImageTextEncoder`` load the folder as it is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from camtrace.embedding.families import MODEL_FAMILIES, pooled_output
from camtrace.embedding.weights import from_pretrained
from camtrace.errors import ConfigError, InputError
from camtrace.inference import resolve_device
from camtrace.training.datasets import PersonDataset, Sample, load_dataset, split_features
from camtrace.training.evaluate import evaluate_model, evaluation_set
from camtrace.training.losses import PersonContrastiveLoss

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TRAINING_FILE = "training.json"
# Parameters trained in the heads stage, by name prefix, per family.
HEAD_PARAMETERS = {
    "siglip": ("vision_model.head.", "text_model.head.", "logit_scale", "logit_bias"),
    "siglip2": ("vision_model.head.", "text_model.head.", "logit_scale", "logit_bias"),
    "clip": ("visual_projection.", "text_projection.", "logit_scale"),
}
MAX_GRAD_NORM = 1.0


@dataclass
class TrainConfig:
    """Everything that decides a training run; defaults follow the model card."""

    datasets: list[str]
    out_dir: Path
    val: str | None = None  # KIND:PATH; default: the val split of the training datasets, if any
    base: str | None = None  # default: CAMTRACE_EMBED_MODEL
    processor: str | None = None  # default: the base's own (or CAMTRACE_EMBED_PROCESSOR for the default base)
    head_epochs: int = 2
    epochs: int = 10
    head_lr: float = 1e-4
    lr: float = 5e-6
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 64
    images_per_identity: int = 4
    accumulate: int = 1
    smoothing: float = 0.1
    text_weight: float = 1.0
    image_weight: float = 0.5
    text_drop: float = 0.2
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    resume: bool | None = None  # None: resume when the out dir holds a checkpoint; True: it must
    device: str = "auto"
    num_workers: int = 0
    eval_batch_size: int = 64
    text_max_length: int = 64
    # Footage with ground truth (synthetic): tight boxes, the detector's boxes as the pipeline cuts them, or both.
    crops: str = "tight"
    # None: the text tower trains only when some training sample has a caption (site data alone has none, and
    # the image tower must not drift away from a text tower that learns nothing) and no dataset is a site's own
    # footage (adapting to a site with the text tower trained on the labelled data mixed in halved description
    # search; frozen, it kept most of it and re-id gained more: bench_quality's quick world, text Top-1 22.2 ->
    # 11.1 trained, 16.7 frozen; re-id mAP 49.9 -> 52.4 and 53.5).
    freeze_text: bool | None = None
    # "anchors": train only an anchor re-id head (camtrace.training.head_training) on the frozen base, for ``epochs``
    # at ``head_lr``; None: fine-tune the model itself.
    head: str | None = None
    anchor_layer: int = -2
    anchor_diversity: float = 0.1
    triplet_margin: float = 0.3

    def _check_head(self) -> None:
        if self.head not in (None, "anchors"):
            raise ConfigError(f"--head must be 'anchors' (or left out to fine-tune the model), not {self.head!r}")
        if self.head and self.epochs < 1:
            raise ConfigError("--head anchors trains the head for --epochs epochs: set --epochs to 1 or more")
        if self.head and self.resume:
            raise ConfigError("--head runs are short (the backbone frozen) and keep no checkpoints: leave out --resume")

    def check(self) -> None:
        if not self.datasets:
            raise ConfigError("name at least one training dataset (--dataset KIND:PATH)")
        for name in ("epochs", "head_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more")
        if self.epochs + self.head_epochs == 0:
            raise ConfigError("nothing to train: --epochs and --head-epochs are both 0")
        self._check_head()
        for name in ("batch_size", "images_per_identity", "accumulate", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.batch_size < self.images_per_identity:
            raise ConfigError(f"batch size {self.batch_size} is smaller than images per identity {self.images_per_identity}")
        if not 0.0 <= self.smoothing < 1.0 or not 0.0 <= self.text_drop < 1.0:
            raise ConfigError("smoothing and text drop must be in [0, 1)")
        from camtrace.training.datasets import CROP_SOURCES

        if self.crops not in CROP_SOURCES:
            raise ConfigError(f"crops must be one of {', '.join(CROP_SOURCES)}, not {self.crops!r}")

    def run_fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must share with the checkpoint's run."""
        skip = {"out_dir", "resume", "device", "num_workers", "eval_batch_size", "keep_checkpoints"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    history: list[dict] = field(default_factory=list)
    val_metrics: dict | None = None
    resumed_from: int | None = None


# --------------------------------------------------------------------------
# Data: batch plans, augmentation, collation
# --------------------------------------------------------------------------
def plan_epoch(
    labels: list[int], seed: int, epoch: int, batches: int, per_identity: int, batch_size: int, groups: dict[int, str] | None = None
) -> list[list[int]]:
    """``batches`` lists of sample indices: P identities x K images each, identities cycled in a shuffled order.

    Identities with a co-occurrence group (site data: tracks seen together are surely different people) fill a
    batch from one group, so every pair the batch sets apart is a true negative; identities without one (labelled
    data) fill the rest of such a batch, and batches of their own."""
    rng = np.random.default_rng([seed, epoch])
    by_identity: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_identity.setdefault(label, []).append(index)
    groups = groups or {}
    per_batch = max(1, min(len(by_identity), batch_size // per_identity))
    plain = sorted(i for i in by_identity if i not in groups)
    grouped: dict[str, list[int]] = {}
    for identity in sorted(i for i in by_identity if i in groups):
        grouped.setdefault(groups[identity], []).append(identity)
    sets = [members for _, members in sorted(grouped.items()) if len(members) >= 2]
    order: list[int] = []
    plan = []
    for number in range(batches):
        chosen: list[int] = []
        if sets and (not plain or number % 2 == 0):
            members = sets[int(rng.integers(len(sets)))]
            chosen = [members[int(i)] for i in rng.permutation(len(members))[:per_batch]]
        wanted = per_batch - len(chosen)
        if wanted > 0 and plain:
            if len(order) < wanted:
                order.extend(int(i) for i in rng.permutation(plain))
            chosen, order = chosen + order[:wanted], order[wanted:]
        batch = []
        for identity in dict.fromkeys(chosen):  # a reshuffle may repeat an identity at the seam
            pool = by_identity[identity]
            picks = rng.choice(len(pool), size=per_identity, replace=len(pool) < per_identity)
            batch.extend(pool[int(p)] for p in picks)
        plan.append(batch)
    return plan


def _is_text(name: str) -> bool:
    """Whether a parameter belongs to the text tower (SigLIP's text_model, CLIP's text_model and projection)."""
    return name.startswith(("text_model.", "text_projection."))


def image_augmentation():
    """Small rotation and scale, horizontal flip, mild colour jitter (a little hue: colours name people)."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=5, scale=(0.9, 1.1), translate=(0.03, 0.03)),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ]
    )


def drop_features(caption: str, rng: np.random.Generator, rate: float) -> str:
    """Drop each comma-separated feature with probability ``rate``, keeping at least one."""
    features = split_features(caption)
    if len(features) < 2 or rate <= 0:
        return caption
    kept = [f for f in features if rng.random() >= rate]
    return ", ".join(kept or [features[int(rng.integers(len(features)))]])


class BatchBuilder(torch.utils.data.Dataset):
    """Item i of an epoch's remaining plan -> model inputs of one batch (runs in DataLoader workers)."""

    def __init__(
        self,
        samples: list[Sample],
        labels: list[int],
        plan: list[list[int]],
        first_step: int,
        processor: Any,
        text_kwargs: dict,
        lowercase: bool,
        config: TrainConfig,
    ) -> None:
        self.samples, self.labels, self.plan, self.first_step = samples, labels, plan, first_step
        self.processor, self.text_kwargs, self.lowercase = processor, text_kwargs, lowercase
        self.config = config
        self.augment = image_augmentation() if config.augment else None

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, item: int) -> dict[str, Any]:
        batch_number = self.first_step + item
        rng = np.random.default_rng([self.config.seed, 1, batch_number])
        torch.manual_seed(int(rng.integers(2**62)))  # torchvision's transforms draw from torch's global RNG
        images, texts, image_ids, text_ids = [], [], [], []
        for index in self.plan[item]:
            sample = self.samples[index]
            image = sample.load_image()
            if self.augment is not None:
                image = self.augment(image)
            images.append(np.array(image))  # writable: torch warns on read-only arrays
            image_ids.append(self.labels[index])
            if sample.captions:
                caption = sample.captions[int(rng.integers(len(sample.captions)))]
                if self.config.augment:
                    caption = drop_features(caption, rng, self.config.text_drop)
                texts.append(caption.lower() if self.lowercase else caption)
                text_ids.append(self.labels[index])
        pixels = self.processor.image_processor(images, return_tensors="pt", input_data_format="channels_last")
        out = {"images": dict(pixels), "image_ids": torch.tensor(image_ids), "texts": None, "text_ids": None}
        if texts:
            out["texts"] = dict(self.processor.tokenizer(texts, return_tensors="pt", **self.text_kwargs))
            out["text_ids"] = torch.tensor(text_ids)
        return out


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------
@dataclass
class LoadedModel:
    model: Any
    processor: Any
    family: str
    text_kwargs: dict
    lowercase: bool


def load_base(base: str, processor_ref: str | None, text_max_length: int) -> LoadedModel:
    """The base checkpoint through the encoder's own loading code (folder, HF cache or hub)."""
    from transformers import AutoConfig, AutoModel, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    config = from_pretrained(AutoConfig.from_pretrained, base, "model")
    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FAMILIES or model_type not in HEAD_PARAMETERS:
        raise ConfigError(f"cannot fine-tune {base!r}: model type {model_type!r} is not one of {', '.join(HEAD_PARAMETERS)}")
    family = MODEL_FAMILIES[model_type]
    model = from_pretrained(AutoModel.from_pretrained, base, "model")
    model.float()
    processor = from_pretrained(AutoProcessor.from_pretrained, processor_ref or base, "processor")
    max_positions = getattr(config.text_config, "max_position_embeddings", None) or text_max_length
    text_kwargs = {"padding": family.text_padding, "max_length": min(text_max_length, max_positions), "truncation": True}
    return LoadedModel(model, processor, model_type, text_kwargs, family.lowercase_text)


def head_parameter_names(model: Any, family: str) -> list[str]:
    prefixes = HEAD_PARAMETERS[family]
    names = [name for name, _ in model.named_parameters() if name.startswith(prefixes)]
    if not names:
        raise ConfigError(f"no head parameters ({', '.join(prefixes)}) found in {type(model).__name__}")
    return names


class InMemoryEncoder:
    """``encode_images`` / ``encode_texts`` over the model being trained, as ImageTextEncoder does for a folder."""

    def __init__(self, loaded: LoadedModel, device: torch.device, batch_size: int) -> None:
        self.loaded, self.device, self.batch_size = loaded, device, batch_size

    @property
    def dim(self) -> int:
        return int(self.encode_texts(["person"]).shape[1])

    def encode_images(self, images) -> np.ndarray:
        arrays = [np.array(image.convert("RGB") if hasattr(image, "convert") else image) for image in images]
        return self._run(arrays, lambda chunk: self.loaded.model.get_image_features(**self._images(chunk)))

    def encode_texts(self, texts) -> np.ndarray:
        texts = [t.lower() for t in texts] if self.loaded.lowercase else list(texts)
        return self._run(texts, lambda chunk: self.loaded.model.get_text_features(**self._texts(chunk)))

    def _images(self, arrays) -> dict:
        inputs = self.loaded.processor.image_processor(arrays, return_tensors="pt", input_data_format="channels_last")
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _texts(self, texts) -> dict:
        inputs = self.loaded.processor.tokenizer(texts, return_tensors="pt", **self.loaded.text_kwargs)
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _run(self, items, forward) -> np.ndarray:
        model = self.loaded.model
        was_training = model.training
        model.eval()
        chunks = []
        try:
            with torch.inference_mode(), _autocast(self.device):
                for start in range(0, len(items), self.batch_size):
                    feats = pooled_output(forward(items[start : start + self.batch_size])).float()
                    chunks.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
        finally:
            model.train(was_training)
        return np.concatenate(chunks)


def _autocast(device: torch.device):
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _to_device(inputs: dict | None, device: torch.device) -> dict | None:
    return None if inputs is None else {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------
def checkpoint_files(out_dir: Path) -> list[Path]:
    folder = Path(out_dir) / CHECKPOINT_DIR
    return sorted(folder.glob("step-*.pt")) if folder.is_dir() else []


def _save_checkpoint(out_dir: Path, state: dict, keep: int) -> Path:
    folder = out_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state['step']:09d}.pt"
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # a crash mid-write leaves the previous checkpoint intact
    for old in checkpoint_files(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
def warmup_then_linear(stage_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, int(round(stage_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, stage_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _load_data(config: TrainConfig) -> tuple[PersonDataset, PersonDataset | None]:
    detector = None
    if config.crops != "tight":
        from camtrace.detection import PersonDetector
        from camtrace.settings import load_settings

        detector = PersonDetector.from_settings(load_settings())  # CAMTRACE_DETECTOR_MODEL: the one that cuts crops
    loaded = [load_dataset(spec, crops=config.crops, detector=detector) for spec in config.datasets]
    everything = PersonDataset.concat(loaded)
    train_set = everything.split("train")
    if not train_set.samples:
        raise InputError(f"{everything.name} has no train split to learn from (splits: {', '.join(sorted(everything.splits))})")
    if config.val:
        val_set = load_dataset(config.val)
    else:
        val_set = everything.split("val") if "val" in everything.splits else None
    return train_set, val_set


def _resolve_refs(config: TrainConfig) -> tuple[str, str | None]:
    from camtrace.settings import load_settings

    settings = load_settings()
    base = config.base or settings.embed_model
    if config.processor is None and base == settings.embed_model:
        return base, settings.effective_embed_processor()
    return base, config.processor


def train(
    config: TrainConfig,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Fine-tune ``config.base`` on ``config.datasets`` and save it to ``config.out_dir``.

    ``on_step(step)`` is called after every optimizer step (and its checkpoint, if one is due).
    """
    config.check()
    base, processor_ref = _resolve_refs(config)
    config = TrainConfig(**{**asdict(config), "base": base, "processor": processor_ref, "out_dir": Path(config.out_dir)})
    checkpoint = None if config.head else _checkpoint_to_resume(config)
    train_set, val_set = _load_data(config)
    if val_set is not None:
        evaluation_set(val_set)  # an unusable validation set fails now, not after the first epoch
    if config.head == "anchors":
        from camtrace.training.head_training import train_anchor_head

        return train_anchor_head(config, train_set, val_set, progress, on_step)
    run = TrainingRun(config, train_set, val_set, progress)
    run.restore(checkpoint)
    del checkpoint
    run.fit(on_step)
    return run.save()


def _checkpoint_to_resume(config: TrainConfig) -> dict | None:
    """The newest checkpoint of ``config.out_dir`` when the run resumes (refused if it is another run's)."""
    out_dir = Path(config.out_dir)
    existing = checkpoint_files(out_dir)
    if config.resume and not existing:
        raise InputError(f"nothing to resume: {out_dir / CHECKPOINT_DIR} holds no checkpoint")
    if not existing or config.resume is False:
        return None
    checkpoint = torch.load(existing[-1], map_location="cpu", weights_only=False)
    if checkpoint["fingerprint"] != config.run_fingerprint():
        differs = sorted(k for k, v in config.run_fingerprint().items() if checkpoint["fingerprint"].get(k) != v)
        raise InputError(
            f"{existing[-1]} belongs to a run with other settings ({', '.join(differs)}); "
            "train into a new --out folder or delete its checkpoints folder"
        )
    return checkpoint


class TrainingRun:
    """One run's state: the model, its optimizer and schedule, where it stands (step, stage, history).

    Stage 1 trains the projection heads (``head_epochs``), stage 2 the whole model (``epochs``); a step is one
    optimizer step of ``accumulate`` batches. Checkpoints hold everything needed to continue bit for bit.
    """

    def __init__(self, config: TrainConfig, train_set: PersonDataset, val_set: PersonDataset | None, progress: bool) -> None:
        self.config, self.train_set, self.val_set, self.progress = config, train_set, val_set, progress
        self.out_dir = Path(config.out_dir)
        label_of = {identity: i for i, identity in enumerate(train_set.identities)}
        self.labels = [label_of[s.identity] for s in train_set.samples]
        self.groups = {label_of[s.identity]: s.group for s in train_set.samples if s.group}
        adapting = any(spec.split(":", 1)[0] == "site" for spec in config.datasets)
        captioned = any(s.captions for s in train_set)
        self.freeze_text = config.freeze_text if config.freeze_text is not None else adapting or not captioned
        log.info("training on %s; validating on %s", train_set, val_set)

        self.device = resolve_device(config.device)
        self.loaded = load_base(config.base, config.processor, config.text_max_length)
        self.model = self.loaded.model.to(self.device)
        self.loss_fn = PersonContrastiveLoss(config.smoothing, config.text_weight, config.image_weight)
        self.head_names = set(head_parameter_names(self.model, self.loaded.family))

        batches_per_epoch = max(config.accumulate, len(train_set) // config.batch_size)
        self.steps_per_epoch = batches_per_epoch // config.accumulate
        self.batches_per_epoch = self.steps_per_epoch * config.accumulate
        self.head_steps = config.head_epochs * self.steps_per_epoch
        self.total_steps = self.head_steps + config.epochs * self.steps_per_epoch
        self.step, self.history, self.resumed_from, self.running = 0, [], None, _Running()
        self.stage = 1

    def _make_stage(self, stage: int) -> None:
        trainable = []
        for name, param in self.model.named_parameters():
            param.requires_grad_((stage == 2 or name in self.head_names) and not (self.freeze_text and _is_text(name)))
            if param.requires_grad:
                trainable.append(param)
        config = self.config
        lr, stage_steps = (config.head_lr, self.head_steps) if stage == 1 else (config.lr, self.total_steps - self.head_steps)
        self.optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_then_linear(stage_steps, config.warmup_ratio))
        self.stage = stage

    def restore(self, checkpoint: dict | None) -> None:
        """Start the run: from a checkpoint (weights, optimizer, schedule, RNG, history) or from the base."""
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.step, self.history, self.resumed_from = checkpoint["step"], checkpoint["history"], checkpoint["step"]
            self.running = _Running(**checkpoint["running"])
        self._make_stage(1 if self.step < self.head_steps else 2)
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            torch.set_rng_state(checkpoint["rng"]["torch"])
            log.info("resumed %s at step %d of %d", self.out_dir, self.step, self.total_steps)

    def fit(self, on_step: Callable[[int], None] | None) -> None:
        self.model.train()
        while self.step < self.total_steps:
            self._epoch(on_step)

    def _epoch_loader(self, epoch: int, step_in_epoch: int) -> torch.utils.data.DataLoader:
        config = self.config
        plan = plan_epoch(
            self.labels, config.seed, epoch, self.batches_per_epoch, config.images_per_identity, config.batch_size, self.groups
        )
        first_batch = step_in_epoch * config.accumulate
        # An epoch never spans the two stages: the heads stage is a whole number of epochs.
        stage_end = self.head_steps if self.stage == 1 else self.total_steps
        last_batch = min(self.batches_per_epoch, first_batch + (stage_end - self.step) * config.accumulate)
        builder = BatchBuilder(
            self.train_set.samples,
            self.labels,
            plan[first_batch:last_batch],
            epoch * self.batches_per_epoch + first_batch,
            self.loaded.processor,
            self.loaded.text_kwargs,
            self.loaded.lowercase,
            config,
        )
        return torch.utils.data.DataLoader(
            builder, batch_size=None, shuffle=False, num_workers=config.num_workers, pin_memory=self.device.type == "cuda"
        )

    def _epoch(self, on_step: Callable[[int], None] | None) -> None:
        config = self.config
        epoch, step_in_epoch = divmod(self.step, self.steps_per_epoch)
        if self.stage == 1 and self.step >= self.head_steps:
            self._make_stage(2)
        loader = self._epoch_loader(epoch, step_in_epoch)
        stage_name = "heads" if self.stage == 1 else "all"
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=step_in_epoch,
            disable=not self.progress,
            unit="step",
            desc=f"epoch {epoch + 1}/{config.head_epochs + config.epochs} ({stage_name})",
        )
        for micro, batch in enumerate(loader):
            self._backward(batch)
            if (micro + 1) % config.accumulate:
                continue
            self._optimizer_step()
            bar.update(1)
            bar.set_postfix(loss=f"{self.running.mean('loss'):.3f}")
            if self.step % self.steps_per_epoch == 0:
                self._close_epoch(epoch, bar)
            if self.step % config.checkpoint_every == 0 and self.step < self.total_steps:
                self._checkpoint()
            if on_step is not None:
                on_step(self.step)
        bar.close()

    def _backward(self, batch: dict) -> None:
        model, device = self.model, self.device
        with _autocast(device):
            image_emb = pooled_output(model.get_image_features(**_to_device(batch["images"], device)))
            text_emb = None
            if batch["texts"] is not None:
                text_emb = pooled_output(model.get_text_features(**_to_device(batch["texts"], device)))
        text_ids = batch["text_ids"].to(device) if batch["text_ids"] is not None else None
        parts = self.loss_fn(image_emb, text_emb, batch["image_ids"].to(device), text_ids, model.logit_scale.exp())
        (parts.total / self.config.accumulate).backward()
        self.running.add(parts)

    def _optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _close_epoch(self, epoch: int, bar: tqdm) -> None:
        self.history.append(self.running.close_epoch(epoch + 1, self.stage))
        if self.val_set is not None:
            self.history[-1]["val"] = _validate(self.loaded, self.device, self.val_set, self.config)
        log.info("epoch %d: %s", epoch + 1, json.dumps(self.history[-1]))
        if self.progress:
            bar.write(_epoch_line(self.history[-1]))

    def _checkpoint(self) -> None:
        config = self.config
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": {
                "seed": config.seed,
                "epoch": self.step // self.steps_per_epoch,
                "step_in_epoch": self.step % self.steps_per_epoch,
            },
            "rng": {"torch": torch.get_rng_state()},
            "history": self.history,
            "running": self.running.state(),
            "fingerprint": config.run_fingerprint(),
        }
        _save_checkpoint(self.out_dir, state, config.keep_checkpoints)

    def save(self) -> TrainResult:
        """The trained model and its processor into the out folder with the run's record; checkpoints go."""
        config, out_dir = self.config, self.out_dir
        val_metrics = self.history[-1].get("val") if self.history else None
        self.model.eval()
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out_dir)
        self.loaded.processor.save_pretrained(out_dir)
        record = {
            "base": config.base,
            "processor": config.processor,
            "steps": self.step,
            "config": jsonable(asdict(config)),
            "history": self.history,
            "val_metrics": val_metrics,
            "resumed_from": self.resumed_from,
        }
        (out_dir / TRAINING_FILE).write_text(json.dumps(record, indent=1))
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
        return TrainResult(out_dir, self.step, self.history, val_metrics, self.resumed_from)


def _epoch_line(entry: dict) -> str:
    line = (
        f"epoch {entry['epoch']} ({entry['stage']}): loss {entry['loss']:.4f} "
        f"(image-text {entry['image_text']:.4f}, image-image {entry['image_image']:.4f})"
    )
    val = entry.get("val") or {}
    if val.get("text_to_identity"):
        figures = val["text_to_identity"]
        line += f"; val text->identity top1 {figures['top1']:.1f} mrr {figures['mrr']:.1f} cmc_auc20 {figures['cmc_auc20']:.1f}"
    if val.get("image_reid"):
        line += f"; val re-id top1 {val['image_reid']['top1']:.1f} map {val['image_reid']['map']:.1f}"
    return line


def _validate(loaded: LoadedModel, device: torch.device, val_set: PersonDataset, config: TrainConfig) -> dict:
    return evaluate_model(InMemoryEncoder(loaded, device, config.eval_batch_size), val_set, batch_size=config.eval_batch_size)


def jsonable(values: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


class _Running:
    """Loss sums of the current epoch (kept in checkpoints, so a resumed epoch reports the same means)."""

    KEYS = ("loss", "image_text", "image_image")

    def __init__(self, sums: dict[str, float] | None = None, count: int = 0) -> None:
        self.sums = sums or dict.fromkeys(self.KEYS, 0.0)
        self.count = count

    def add(self, parts) -> None:
        self.sums["loss"] += float(parts.total.detach())
        self.sums["image_text"] += float(parts.image_text.detach())
        self.sums["image_image"] += float(parts.image_image.detach())
        self.count += 1

    def mean(self, key: str) -> float:
        return self.sums[key] / max(1, self.count)

    def close_epoch(self, epoch: int, stage: int) -> dict:
        entry = {"epoch": epoch, "stage": "heads" if stage == 1 else "all", **{k: round(self.mean(k), 5) for k in self.KEYS}}
        self.sums, self.count = dict.fromkeys(self.KEYS, 0.0), 0
        return entry

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}
