"""`camtrace train --head anchors`: only the head learns, the backbone is saved as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from embedding_fixtures import tiny_siglip2_dir  # noqa: F401  (fixture)
from safetensors.torch import load_file

from camtrace.embedding import ImageTextEncoder
from camtrace.embedding.anchor_head import HEAD_CONFIG, HEAD_WEIGHTS, build_anchor_head, load_anchor_head
from camtrace.errors import ConfigError
from camtrace.training.losses import triplet_loss


def test_triplet_loss_is_zero_when_identities_are_apart_by_the_margin_and_positive_otherwise():
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    assert float(triplet_loss(apart, labels, 0.3)) == 0.0
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    assert float(triplet_loss(mixed, labels, 0.3)) > 1.0
    assert float(triplet_loss(apart, torch.tensor([0, 1, 2, 3]), 0.3)) == 0.0  # no positives: nothing to compare


def test_train_head_anchors_changes_only_the_head(tiny_siglip_dir, footage, tmp_path):
    from camtrace.cli import cli

    out = tmp_path / "model"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--dataset",
            f"synthetic:{footage.root}",
            "--base",
            str(tiny_siglip_dir),
            "--head",
            "anchors",
            "--epochs",
            "2",
            "--head-lr",
            "1e-3",
            "--batch-size",
            "8",
            "--images-per-identity",
            "2",
            "--crops",
            "tight",
            "--out",
            str(out),
            "--no-progress",
            "--no-register",
            "--json",
        ],
        env={"CAMTRACE_DEVICE": "cpu", "CAMTRACE_DATA_DIR": str(tmp_path / "data"), "CAMTRACE_ANCHOR_LAYER": "1"},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["steps"] > 0 and len(summary["history"]) == 2
    # The backbone is the base's, tensor for tensor.
    base, trained = load_file(str(tiny_siglip_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert base.keys() == trained.keys()
    for name, tensor in base.items():
        torch.testing.assert_close(trained[name], tensor, rtol=0, atol=0, msg=name)
    # The head was trained: its weights moved from where a fresh head of the same seed starts.
    assert (out / HEAD_WEIGHTS).is_file() and json.loads((out / HEAD_CONFIG).read_text())["layer"] == 1
    from camtrace.training.trainer import load_base

    loaded = load_base(str(tiny_siglip_dir), None, 64)
    fresh = build_anchor_head(loaded.model, loaded.processor.tokenizer, loaded.text_kwargs, loaded.lowercase, layer=1)
    head = load_anchor_head(out)
    moved = [
        name
        for name, value in head.state_dict().items()
        if name != "text_anchors" and not torch.equal(value, fresh.state_dict()[name])
    ]
    assert "context" in moved and any(name.startswith("blocks.") for name in moved)
    torch.testing.assert_close(head.text_anchors, fresh.text_anchors)
    # Validation reports re-id with and without the head; the classifier is not saved.
    val = summary["val_metrics"]
    assert val["image_reid"] is not None and val["image_reid_head"] is not None
    assert not any("classifier" in name for name in load_file(str(out / HEAD_WEIGHTS)))
    # The encoder picks the head up.
    encoder = ImageTextEncoder(out, None, device="cpu")
    assert encoder.has_reid_head and encoder.reid_dim == 32
    # `camtrace eval` of the saved model reports re-id with and without the head; of the base, without only.
    from camtrace.training.datasets import load_dataset
    from camtrace.training.evaluate import evaluate_model, format_table

    dataset = load_dataset(f"synthetic:{footage.root}", crops="tight")
    figures = evaluate_model(encoder, dataset)
    assert figures["image_reid"] is not None and figures["image_reid_head"]["queries"] == figures["image_reid"]["queries"]
    assert "image_reid_head" in format_table(figures)
    assert "image_reid_head" not in evaluate_model(ImageTextEncoder(tiny_siglip_dir, None, device="cpu"), dataset)


def test_head_training_refuses_what_it_cannot_do(tiny_siglip_dir, footage, tmp_path):
    from camtrace.training.trainer import TrainConfig, train

    config = TrainConfig(
        [f"synthetic:{footage.root}"],
        tmp_path / "m",
        base=str(tiny_siglip_dir),
        head="anchors",
        epochs=0,
        head_epochs=1,
        crops="tight",
        device="cpu",
    )
    with pytest.raises(ConfigError, match="--epochs"):
        train(config, progress=False)
    with pytest.raises(ConfigError, match="anchors"):
        train(TrainConfig([f"synthetic:{footage.root}"], tmp_path / "m", head="parts", crops="tight"), progress=False)
    resumed = TrainConfig([f"synthetic:{footage.root}"], tmp_path / "m", head="anchors", resume=True, crops="tight")
    with pytest.raises(ConfigError, match="no checkpoints: leave out --resume"):
        train(resumed, progress=False)


def test_a_head_trains_on_siglip2_and_the_encoder_uses_it(tiny_siglip2_dir, footage, tmp_path):
    from camtrace.training.trainer import TrainConfig, train

    config = TrainConfig(
        [f"synthetic:{footage.root}"],
        tmp_path / "m",
        base=str(tiny_siglip2_dir),
        head="anchors",
        epochs=1,
        head_lr=1e-3,
        batch_size=8,
        images_per_identity=2,
        crops="tight",
        device="cpu",
        anchor_layer=-1,
    )
    result = train(config, progress=False)
    assert result.steps > 0 and result.val_metrics["image_reid_head"] is not None
    encoder = ImageTextEncoder(result.out_dir, None, device="cpu")
    crops = [np.full((40 + 8 * i, 20, 3), 60 * i, np.uint8) for i in range(3)]
    text, reid = encoder.encode_image_pair(crops)
    np.testing.assert_allclose(text, ImageTextEncoder(tiny_siglip2_dir, None, device="cpu").encode_images(crops), atol=1e-5)
    assert reid.shape == (3, 32) and load_anchor_head(result.out_dir).config.layer == -1
