"""Training an anchor re-id head (camtrace.embedding.anchor_head) on a frozen backbone: ``camtrace train --head anchors``.

The backbone (both towers) stays exactly as the base checkpoint has it; only the head learns, from identity labels:
a label-smoothed cross-entropy over the training identities (through a classifier layer that is not saved), a
batch-hard triplet loss (margin ``triplet_margin``) on the pooled feature, and ``anchor_diversity`` times the
head's diversity term. Batches are P identities x K images, planned as the fine-tuning run plans them, for
``epochs`` epochs at ``head_lr`` (AdamW, warm-up then cosine). The out folder holds the base checkpoint as it was
plus ``anchor_head.safetensors`` and ``anchor_head.json``; validation reports re-id with and without the head.
Runs are short (a head on frozen features): there are no checkpoints to resume from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from camtrace.embedding.anchor_head import AnchorHead, build_anchor_head, vision_tokens
from camtrace.inference import resolve_device
from camtrace.training.datasets import PersonDataset
from camtrace.training.evaluate import evaluate_model
from camtrace.training.losses import triplet_loss

if TYPE_CHECKING:
    from camtrace.training.trainer import TrainConfig, TrainResult

log = logging.getLogger(__name__)


class HeadEncoder:
    """``encode_images`` through the frozen tower and the head: the re-id vectors evaluation compares."""

    def __init__(self, model: Any, processor: Any, head: AnchorHead, device: torch.device, batch_size: int) -> None:
        self.model, self.processor, self.head, self.device, self.batch_size = model, processor, head, device, batch_size

    @property
    def dim(self) -> int:
        return self.head.config.width

    def encode_images(self, images) -> np.ndarray:
        arrays = [np.array(image.convert("RGB") if hasattr(image, "convert") else image) for image in images]
        was_training = self.head.training
        self.head.eval()
        chunks = []
        try:
            with torch.inference_mode():
                for start in range(0, len(arrays), self.batch_size):
                    inputs = self.processor.image_processor(
                        arrays[start : start + self.batch_size], return_tensors="pt", input_data_format="channels_last"
                    )
                    inputs = {k: v.to(self.device) for k, v in inputs.items()}
                    _, tokens, mask = vision_tokens(self.model, inputs, self.head.config.layer)
                    chunks.append(self.head(tokens.float(), mask).embedding.cpu().numpy())
        finally:
            self.head.train(was_training)
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts) -> np.ndarray:  # the head has no text side: evaluation asks only for images
        raise NotImplementedError("the anchor head encodes images only")


class AnchorHeadRun:
    """One head-training run: the frozen model, the head and its classifier, the optimizer and schedule."""

    def __init__(self, config: TrainConfig, train_set: PersonDataset, val_set: PersonDataset | None, progress: bool) -> None:
        from camtrace.training.trainer import load_base, warmup_then_linear

        self.config, self.train_set, self.val_set, self.progress = config, train_set, val_set, progress
        self.out_dir = Path(config.out_dir)
        label_of = {identity: i for i, identity in enumerate(train_set.identities)}
        self.labels = [label_of[s.identity] for s in train_set.samples]
        self.device = resolve_device(config.device)
        self.loaded = load_base(config.base, config.processor, config.text_max_length)
        self.model = self.loaded.model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.head = build_anchor_head(
            self.model,
            self.loaded.processor.tokenizer,
            self.loaded.text_kwargs,
            self.loaded.lowercase,
            layer=config.anchor_layer,
            seed=config.seed,
        ).to(self.device)
        self.classifier = torch.nn.Linear(self.head.config.width, len(label_of), bias=False).to(self.device)
        params = [*self.head.parameters(), *self.classifier.parameters()]
        self.optimizer = torch.optim.AdamW(
            [p for p in params if p.requires_grad], lr=config.head_lr, weight_decay=config.weight_decay
        )
        self.batches_per_epoch = max(1, len(train_set) // config.batch_size)
        self.total_steps = config.epochs * self.batches_per_epoch
        schedule = warmup_then_linear(self.total_steps, config.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.step, self.history = 0, []
        log.info("training an anchor head (layer %d) on %s; validating on %s", config.anchor_layer, train_set, val_set)

    def fit(self, on_step=None) -> None:
        from camtrace.training.trainer import BatchBuilder, plan_epoch

        config = self.config
        for epoch in range(config.epochs):
            plan = plan_epoch(
                self.labels, config.seed, epoch, self.batches_per_epoch, config.images_per_identity, config.batch_size
            )
            builder = BatchBuilder(
                self.train_set.samples,
                self.labels,
                plan,
                epoch * self.batches_per_epoch,
                self.loaded.processor,
                self.loaded.text_kwargs,
                self.loaded.lowercase,
                config,
            )
            sums = dict.fromkeys(("loss", "id", "triplet", "diversity"), 0.0)
            for item in tqdm(
                range(len(builder)), disable=not self.progress, unit="step", desc=f"epoch {epoch + 1}/{config.epochs} (anchor head)"
            ):
                for key, value in self._step(builder[item]).items():
                    sums[key] += value
                if on_step is not None:
                    on_step(self.step)
            entry = {"epoch": epoch + 1, "stage": "anchor head", **{k: round(v / max(1, len(builder)), 5) for k, v in sums.items()}}
            if self.val_set is not None:
                entry["val"] = self.evaluate(self.val_set)
            log.info("epoch %d: %s", epoch + 1, json.dumps(entry))
            self.history.append(entry)

    def _step(self, batch: dict) -> dict[str, float]:
        self.head.train()
        inputs = {k: v.to(self.device) for k, v in batch["images"].items()}
        ids = batch["image_ids"].to(self.device)
        with torch.no_grad():
            _, tokens, mask = vision_tokens(self.model, inputs, self.head.config.layer)
        out = self.head(tokens.float(), mask)
        identity = F.cross_entropy(self.classifier(out.normed), ids, label_smoothing=self.config.smoothing)
        triplet = triplet_loss(out.feature, ids, self.config.triplet_margin)
        diversity = self.head.diversity_loss(out.attention)
        total = identity + triplet + self.config.anchor_diversity * diversity
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_([*self.head.parameters(), *self.classifier.parameters()], 5.0)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        parts = {"loss": total, "id": identity, "triplet": triplet, "diversity": diversity}
        return {key: float(value.detach()) for key, value in parts.items()}

    def evaluate(self, dataset: PersonDataset) -> dict:
        """Re-id with the tower's own pooled vector (``image_reid``, and text -> identity, which the head leaves as
        it was) and with the head (``image_reid_head``), as ``evaluate_model`` reports a model with a head."""
        from camtrace.training.trainer import InMemoryEncoder

        batch = self.config.eval_batch_size
        plain = evaluate_model(InMemoryEncoder(self.loaded, self.device, batch), dataset, batch_size=batch)
        with_head = evaluate_model(
            HeadEncoder(self.model, self.loaded.processor, self.head, self.device, batch),
            _without_captions(dataset),
            batch_size=batch,
        )
        return {**plain, "image_reid_head": with_head["image_reid"]}

    def save(self) -> TrainResult:
        from camtrace.training.trainer import TRAINING_FILE, TrainResult, jsonable

        out_dir = self.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out_dir)
        self.loaded.processor.save_pretrained(out_dir)
        self.head.eval().cpu().save(out_dir)
        val_metrics = self.history[-1].get("val") if self.history else None
        record = {
            "base": self.config.base,
            "processor": self.config.processor,
            "steps": self.step,
            "head": "anchors",
            "config": jsonable(asdict(self.config)),
            "history": self.history,
            "val_metrics": val_metrics,
        }
        (out_dir / TRAINING_FILE).write_text(json.dumps(record, indent=1))
        return TrainResult(out_dir, self.step, self.history, val_metrics, None)


def _without_captions(dataset: PersonDataset) -> PersonDataset:
    from dataclasses import replace

    return PersonDataset([replace(s, captions=[]) for s in dataset.samples], dataset.name)


def train_anchor_head(
    config: TrainConfig, train_set: PersonDataset, val_set: PersonDataset | None, progress: bool = True, on_step=None
) -> TrainResult:
    """Train a head on ``config.base`` (frozen) and save both into ``config.out_dir``."""
    run = AnchorHeadRun(config, train_set, val_set, progress)
    run.fit(on_step)
    return run.save()
