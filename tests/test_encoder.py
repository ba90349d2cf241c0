"""ImageTextEncoder on tiny random checkpoints saved to folders, loaded like real weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from embedding_fixtures import make_crops, tiny_clip_dir, tiny_siglip2_dir  # noqa: F401  (fixtures)
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoProcessor  # noqa: F401  (import cost kept out of timings)

from camtrace.embedding import ImageTextEncoder, resolve_device
from camtrace.embedding.tiny_model import build_tiny_siglip
from camtrace.errors import ConfigError, InputError, ModelLoadError
from camtrace.settings import Settings

QUERIES = [
    "man, grey hoodie, blue jeans",
    "woman, red coat, black backpack",
    "person",
    "child with a yellow umbrella and green boots, carrying a small bag",
]


@pytest.fixture(scope="module")
def encoder(tiny_siglip_dir: Path) -> ImageTextEncoder:
    return ImageTextEncoder(tiny_siglip_dir, None, device="cpu", batch_size=4)


def unit_rows(vectors: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5))


# -- loading -------------------------------------------------------------------
def test_construction_and_version_do_not_load(tiny_siglip_dir: Path) -> None:
    enc = ImageTextEncoder(tiny_siglip_dir, None, device="cpu")
    assert not enc.loaded
    assert enc.model_version.startswith("tiny-siglip@")
    assert not enc.loaded  # a local folder is identified from its files
    assert enc.dim == 32
    assert not enc.loaded  # the vector size comes from config.json


def test_unload_then_use_reloads_same_weights(tiny_siglip_dir: Path) -> None:
    enc = ImageTextEncoder(tiny_siglip_dir, None, device="cpu")
    crops = make_crops(3)
    before = enc.encode_images(crops)
    enc.unload()
    assert not enc.loaded
    np.testing.assert_allclose(enc.encode_images(crops), before, atol=1e-6)


def test_devices_are_checked_when_loading(tiny_siglip_dir: Path) -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="CAMTRACE_DEVICE"):
        resolve_device("tpu")
    enc = ImageTextEncoder(tiny_siglip_dir, None, device="cuda:99")  # no such GPU anywhere
    with pytest.raises(ConfigError, match="CAMTRACE_DEVICE"):
        enc.load()
    assert not enc.loaded


def test_from_settings(tiny_siglip_dir: Path) -> None:
    settings = Settings(
        embed_model=str(tiny_siglip_dir), embed_processor="", device="cpu", embed_batch_size=3, embed_text_max_length=16
    )
    enc = ImageTextEncoder.from_settings(settings)
    assert (enc.processor_name, enc.batch_size, enc.text_max_length) == (None, 3, 16)
    assert enc.encode_texts(["man"]).shape == (1, 32)


# -- images --------------------------------------------------------------------
def test_image_vectors_are_unit_float32(encoder: ImageTextEncoder) -> None:
    vectors = encoder.encode_images(make_crops(6))
    assert vectors.shape == (6, encoder.dim)
    assert vectors.dtype == np.float32
    assert unit_rows(vectors)


def test_batched_images_equal_one_at_a_time(encoder: ImageTextEncoder) -> None:
    crops = make_crops(10, seed=1)  # batch_size 4: full, full and partial batches
    batched = encoder.encode_images(crops)
    single = np.concatenate([encoder.encode_images([crop]) for crop in crops])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_same_image_same_vector_different_images_differ(encoder: ImageTextEncoder) -> None:
    a, b = make_crops(2, seed=2)
    va, vb, va_again, va_pil = encoder.encode_images([a, b, a, Image.fromarray(a)])
    np.testing.assert_allclose(va, va_again, atol=1e-6)
    np.testing.assert_allclose(va, va_pil, atol=1e-6)
    assert float(va @ vb) < 0.99


def test_non_rgb_pil_images_are_converted(encoder: ImageTextEncoder) -> None:
    rgb = make_crops(1, seed=3)[0]
    rgba = Image.fromarray(rgb).convert("RGBA")
    np.testing.assert_allclose(encoder.encode_images([rgba]), encoder.encode_images([rgb]), atol=1e-6)


def test_thin_crops_are_read_as_channels_last(encoder: ImageTextEncoder) -> None:
    # 3 pixels high: ambiguous with channels-first unless the layout is stated.
    thin = np.full((3, 40, 3), 200, dtype=np.uint8)
    assert encoder.encode_images([thin]).shape == (1, encoder.dim)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((20, 10), np.uint8), np.zeros((20, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8), "crop.jpg"],
)
def test_bad_images_raise_input_error(encoder: ImageTextEncoder, bad: object) -> None:
    with pytest.raises(InputError):
        encoder.encode_images([bad])


def test_empty_inputs_give_empty_matrices(encoder: ImageTextEncoder) -> None:
    assert encoder.encode_images([]).shape == (0, encoder.dim)
    assert encoder.encode_texts([]).shape == (0, encoder.dim)


# -- texts ---------------------------------------------------------------------
def test_text_vectors_are_unit_float32_and_distinct(encoder: ImageTextEncoder) -> None:
    vectors = encoder.encode_texts(QUERIES)
    assert vectors.shape == (len(QUERIES), encoder.dim)
    assert vectors.dtype == np.float32
    assert unit_rows(vectors)
    sims = vectors @ vectors.T
    assert (sims[~np.eye(len(QUERIES), dtype=bool)] < 0.999).all()


def test_texts_padded_to_max_length_batch_equals_alone(encoder: ImageTextEncoder) -> None:
    # Different lengths in one batch: equal to each alone only if every text is padded to max_length.
    batched = encoder.encode_texts(QUERIES)
    alone = np.concatenate([encoder.encode_texts([q]) for q in QUERIES])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_texts_are_lower_cased_for_siglip(encoder: ImageTextEncoder) -> None:
    np.testing.assert_allclose(encoder.encode_texts(["MAN, Grey Hoodie"]), encoder.encode_texts(["man, grey hoodie"]), atol=1e-6)


def test_long_texts_are_truncated(tiny_siglip_dir: Path) -> None:
    # More tokens than the text tower has positions, and a setting above its maximum.
    enc = ImageTextEncoder(tiny_siglip_dir, None, device="cpu", text_max_length=128)
    long = ", ".join(["woman in a red coat"] * 40)
    vectors = enc.encode_texts([long, long + ", man"])
    assert unit_rows(vectors)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # the difference lies past the cut


def test_a_single_string_is_refused(encoder: ImageTextEncoder) -> None:
    with pytest.raises(InputError):
        encoder.encode_texts("man, grey hoodie")


# -- other families through the same class ---------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_clip_dir", "tiny_siglip2_dir"])
def test_other_families_load_through_the_same_class(request: pytest.FixtureRequest, fixture: str) -> None:
    enc = ImageTextEncoder(request.getfixturevalue(fixture), None, device="cpu", batch_size=3)
    crops = make_crops(5, seed=4)
    images = enc.encode_images(crops)
    texts = enc.encode_texts(QUERIES)
    assert images.shape == (5, enc.dim) and texts.shape == (len(QUERIES), enc.dim)
    assert unit_rows(images) and unit_rows(texts)
    np.testing.assert_allclose(images, np.concatenate([enc.encode_images([c]) for c in crops]), atol=1e-5)
    np.testing.assert_allclose(texts, np.concatenate([enc.encode_texts([q]) for q in QUERIES]), atol=1e-5)
    assert np.abs(images[0] - images[1]).max() > 1e-3


# -- model versions ------------------------------------------------------------
def test_model_version_is_stable_and_follows_the_weights(tmp_path: Path) -> None:
    folder = build_tiny_siglip(tmp_path / "reid", seed=0)
    first = ImageTextEncoder(folder, None, device="cpu")
    version = first.model_version
    first.load()
    assert first.model_version == version
    assert ImageTextEncoder(folder, None, device="cpu").model_version == version

    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "reid")
    assert ImageTextEncoder(copy, None).model_version == version  # content, not location

    build_tiny_siglip(folder, seed=1)  # same folder, new weights
    changed = ImageTextEncoder(folder, None, device="cpu").model_version
    assert changed.startswith("reid@") and changed != version
    assert first.model_version == version  # what the loaded instance holds


# -- load errors ---------------------------------------------------------------
def _assert_load_error(enc: ImageTextEncoder, *words: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        enc.encode_texts(["man"])
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    for word in ("CAMTRACE_EMBED_MODEL", *words):
        assert word in message


def test_missing_folder(tmp_path: Path) -> None:
    _assert_load_error(ImageTextEncoder(tmp_path / "no-such-model", None), "no-such-model", "no such folder")


def test_folder_without_a_model(tmp_path: Path) -> None:
    _assert_load_error(ImageTextEncoder(tmp_path, None), str(tmp_path), "folder holds no loadable model")


def test_folder_with_config_but_no_weights(tmp_path: Path, tiny_siglip_dir: Path) -> None:
    shutil.copy(tiny_siglip_dir / "config.json", tmp_path / "config.json")
    _assert_load_error(ImageTextEncoder(tmp_path, None), str(tmp_path), "folder holds no loadable model")


def test_folder_without_a_processor(tmp_path: Path, tiny_siglip_dir: Path) -> None:
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_siglip_dir / name, tmp_path / name)
    _assert_load_error(ImageTextEncoder(tmp_path, None), "CAMTRACE_EMBED_PROCESSOR")


def test_missing_processor_folder(tmp_path: Path, tiny_siglip_dir: Path) -> None:
    enc = ImageTextEncoder(tiny_siglip_dir, tmp_path / "no-such-processor")
    _assert_load_error(enc, "CAMTRACE_EMBED_PROCESSOR", "no-such-processor")


def test_vision_only_checkpoint_is_refused(tmp_path: Path) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    SiglipVisionModel(config).save_pretrained(tmp_path)
    _assert_load_error(ImageTextEncoder(tmp_path, None), "siglip_vision_model", "not an image-text family")


def test_uncached_hub_id_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_load_error(ImageTextEncoder("nobody-here/no-such-reid-model", None), "no-such-reid-model", "HF_HUB_OFFLINE")


def test_hub_ids_resolve_from_the_cache_and_fail_fast_when_unreachable(tmp_path: Path, tiny_siglip_dir: Path) -> None:
    """Online mode, hub down: a cached id loads with its commit as version; an uncached one fails in
    seconds (one probe instead of huggingface_hub's ~25 s of retries)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--camtrace--tiny-reid"
    shutil.copytree(tiny_siglip_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = textwrap.dedent(
        """
        import time
        from transformers import AutoConfig, AutoModel, AutoProcessor  # import cost kept out of the timing
        from camtrace.embedding import ImageTextEncoder, resolve_device
        from camtrace.errors import ModelLoadError
        cached = ImageTextEncoder("camtrace/tiny-reid", None, device="cpu")
        print(cached.model_version, cached.loaded)
        print(cached.encode_texts(["man"]).shape)
        start = time.monotonic()
        try:
            ImageTextEncoder("nobody-here/no-such-reid-model", None).load()
        except ModelLoadError as exc:
            print(f"{time.monotonic() - start:.2f}")
            print(exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    # A closed local port: refused at once, and no request leaves the machine.
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4, result.stdout + result.stderr
    assert lines[0] == f"camtrace/tiny-reid@{commit[:12]} False"  # identified without loading
    assert lines[1] == "(1, 32)"
    assert float(lines[2]) < 5.0
    assert "CAMTRACE_EMBED_MODEL" in lines[3] and "cannot be reached" in lines[3]
