"""The anchor re-id head: its output, its files, the encoder with and without it, and its ONNX export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from embedding_fixtures import tiny_siglip2_dir  # noqa: F401  (fixture)

from camtrace.embedding import ImageTextEncoder
from camtrace.embedding.anchor_head import (
    ANCHOR_PROMPTS,
    HEAD_CONFIG,
    HEAD_WEIGHTS,
    build_anchor_head,
    has_anchor_head,
    load_anchor_head,
    prompt_embeddings,
    vision_tokens,
)
from camtrace.errors import ConfigError, ModelLoadError
from camtrace.synthetic import person_crops


def _loaded(folder: Path):
    from camtrace.training.trainer import load_base

    return load_base(str(folder), None, 64)


def _head_for(folder: Path, seed: int = 1):
    loaded = _loaded(folder)
    head = build_anchor_head(loaded.model, loaded.processor.tokenizer, loaded.text_kwargs, loaded.lowercase, seed=seed)
    # A trained BatchNorm has statistics of its own: give it some, so a round trip that lost them would show.
    with torch.no_grad():
        head.bottleneck.running_mean.uniform_(-0.5, 0.5)
        head.bottleneck.running_var.uniform_(0.5, 2.0)
    return loaded, head.eval()


@pytest.fixture(scope="module")
def headed_dir(tiny_siglip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a (random) anchor head saved next to it."""
    folder = tmp_path_factory.mktemp("headed") / "tiny-siglip-anchors"
    shutil.copytree(tiny_siglip_dir, folder)
    _, head = _head_for(folder)
    head.save(folder)
    return folder


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    return person_crops(6, seed=3)


def test_head_gives_unit_rows_of_the_vision_width_and_ignores_padding(tiny_siglip_dir):
    loaded, head = _head_for(tiny_siglip_dir)
    pixels = torch.randn(3, 3, 32, 32)
    _, tokens, mask = vision_tokens(loaded.model, {"pixel_values": pixels}, head.config.layer)
    assert mask is None and tokens.shape == (3, 16, 32)
    out = head(tokens)
    assert out.embedding.shape == (3, loaded.model.config.vision_config.hidden_size)
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(3))
    assert out.attention.shape == (3, head.config.anchors, 16)
    assert head.config.anchors == len(ANCHOR_PROMPTS) * 3 + 2
    # Padded tokens (SigLIP2's NaFlex) change nothing where the mask leaves them out.
    padded = torch.cat([tokens, torch.randn(3, 4, 32) * 50], dim=1)
    mask = torch.cat([torch.ones(3, 16, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(head(padded, mask).embedding, out.embedding, atol=1e-5, rtol=1e-5)
    # Different images, different vectors.
    assert float((out.embedding[0] - out.embedding[1]).detach().abs().max()) > 1e-3


def test_text_anchors_come_from_the_models_own_text_tower(tiny_siglip_dir):
    loaded, head = _head_for(tiny_siglip_dir)
    expected = prompt_embeddings(
        loaded.model, loaded.processor.tokenizer, list(ANCHOR_PROMPTS), loaded.text_kwargs, loaded.lowercase
    )
    torch.testing.assert_close(head.text_anchors, expected)
    assert "text_anchors" in dict(head.named_buffers()) and "text_anchors" not in dict(head.named_parameters())


def test_save_and_load_round_trip(tiny_siglip_dir, tmp_path):
    loaded, head = _head_for(tiny_siglip_dir)
    head.save(tmp_path)
    assert has_anchor_head(tmp_path) and json.loads((tmp_path / HEAD_CONFIG).read_text())["layer"] == -2
    again = load_anchor_head(tmp_path)
    tokens = torch.randn(4, 16, 32)
    torch.testing.assert_close(again(tokens).embedding, head(tokens).embedding)
    torch.testing.assert_close(again.text_anchors, head.text_anchors)


def test_a_head_that_does_not_fit_its_files_fails_with_the_fix(tiny_siglip_dir, tmp_path):
    _, head = _head_for(tiny_siglip_dir)
    head.save(tmp_path)
    config = json.loads((tmp_path / HEAD_CONFIG).read_text())
    (tmp_path / HEAD_CONFIG).write_text(json.dumps({**config, "width": 48}))
    with pytest.raises(ModelLoadError, match="camtrace train --head anchors"):
        load_anchor_head(tmp_path)
    (tmp_path / HEAD_CONFIG).write_text("{not json")
    with pytest.raises(ModelLoadError, match=HEAD_CONFIG):
        load_anchor_head(tmp_path)


def test_a_plain_checkpoint_loads_exactly_as_before(tiny_siglip_dir, crops):
    from camtrace.embedding.families import pooled_output

    encoder = ImageTextEncoder(tiny_siglip_dir, None, device="cpu")
    assert not encoder.has_reid_head and encoder.reid_dim is None
    vectors = encoder.encode_images(crops)
    loaded = _loaded(tiny_siglip_dir)
    inputs = loaded.processor.image_processor(crops, return_tensors="pt", input_data_format="channels_last")
    with torch.no_grad():
        direct = torch.nn.functional.normalize(pooled_output(loaded.model.get_image_features(**inputs)), dim=-1)
    np.testing.assert_allclose(vectors, direct.numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="no anchor head"):
        encoder.encode_reid_images(crops)


def test_with_a_head_the_text_vector_is_unchanged_and_the_reid_vector_is_the_heads(tiny_siglip_dir, headed_dir, crops):
    plain = ImageTextEncoder(tiny_siglip_dir, None, device="cpu")
    headed = ImageTextEncoder(headed_dir, None, device="cpu", batch_size=4)
    assert headed.has_reid_head and headed.reid_dim == 32
    text, reid = headed.encode_image_pair(crops)
    np.testing.assert_allclose(text, plain.encode_images(crops), atol=1e-5)
    np.testing.assert_allclose(headed.encode_images(crops), text, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(reid, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(headed.encode_reid_images(crops), reid, atol=1e-6)
    # The head's vector is its own, not the pooled one.
    assert np.abs(reid - text).max() > 0.05
    # Text queries answer as before.
    np.testing.assert_allclose(headed.encode_texts(["red top"]), plain.encode_texts(["red top"]), atol=1e-6)
    # Adding the head names new weights: the version changes, so the index knows its vectors differ.
    assert headed.model_version != plain.model_version
    loaded = _loaded(headed_dir)
    head = load_anchor_head(headed_dir)
    inputs = loaded.processor.image_processor(crops, return_tensors="pt", input_data_format="channels_last")
    with torch.no_grad():
        _, tokens, _ = vision_tokens(loaded.model, dict(inputs), head.config.layer)
        np.testing.assert_allclose(reid, head(tokens).embedding.numpy(), atol=1e-5)


def test_onnx_export_carries_the_head_as_a_second_output(headed_dir, tmp_path, crops):
    torch_encoder = ImageTextEncoder(headed_dir, None, device="cpu")
    onnx = ImageTextEncoder(
        headed_dir, None, device="cpu", batch_size=4, runtime="onnx", exports_dir=tmp_path, onnx_quantize="fp32"
    )
    text, reid = onnx.encode_image_pair(crops)
    assert onnx.runtime_label == "onnx fp32"
    expected_text, expected_reid = torch_encoder.encode_image_pair(crops)
    assert float((text * expected_text).sum(axis=1).min()) >= 0.999
    assert float((reid * expected_reid).sum(axis=1).min()) >= 0.999
    np.testing.assert_allclose(onnx.encode_images(crops), text, atol=1e-6)
    # int8 (the CPU default) quantises the head with the tower and stays close.
    int8 = ImageTextEncoder(headed_dir, None, device="cpu", runtime="onnx", exports_dir=tmp_path, onnx_quantize="auto")
    text8, reid8 = int8.encode_image_pair(crops)
    assert int8.runtime_label == "onnx int8"
    assert float((reid8 * expected_reid).sum(axis=1).min()) >= 0.99
    assert float((text8 * expected_text).sum(axis=1).min()) >= 0.99


def test_files_of_the_head_are_named_in_the_error_of_a_half_saved_head(headed_dir, tmp_path):
    folder = tmp_path / "half"
    shutil.copytree(headed_dir, folder)
    (folder / HEAD_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match=HEAD_WEIGHTS):
        ImageTextEncoder(folder, None, device="cpu").load()


def test_siglip2_padded_patches_leave_the_head_vector_alone(tiny_siglip2_dir, tmp_path, crops):
    """SigLIP2 (NaFlex) pads each crop's patch sequence to the batch's longest: the head masks the padding, so a
    crop's re-id vector does not depend on its batch mates."""
    folder = tmp_path / "siglip2-anchors"
    shutil.copytree(tiny_siglip2_dir, folder)
    _, head = _head_for(folder)
    head.save(folder)
    plain = ImageTextEncoder(tiny_siglip2_dir, None, device="cpu")
    headed = ImageTextEncoder(folder, None, device="cpu", batch_size=8)
    text, reid = headed.encode_image_pair(crops)
    np.testing.assert_allclose(text, plain.encode_images(crops), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(reid, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([headed.encode_reid_images([crop]) for crop in crops])
    np.testing.assert_allclose(reid, alone, atol=1e-4)
