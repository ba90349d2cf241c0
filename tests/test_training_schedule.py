"""The heads stage trains only the heads, for every family; the whole-model stage trains the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from embedding_fixtures import tiny_clip_dir, tiny_siglip2_dir  # noqa: F401
from safetensors.torch import load_file

from camtrace.training.trainer import HEAD_PARAMETERS, TrainConfig, train


@pytest.mark.parametrize(
    ("family", "folder_fixture"), [("siglip", "tiny_siglip_dir"), ("siglip2", "tiny_siglip2_dir"), ("clip", "tiny_clip_dir")]
)
def test_heads_stage_changes_only_the_heads_and_the_second_stage_the_rest(family, folder_fixture, footage, tmp_path, request):
    base = Path(request.getfixturevalue(folder_fixture))
    common = dict(
        datasets=[f"synthetic:{footage.root}"],
        base=str(base),
        batch_size=8,
        images_per_identity=2,
        head_lr=1e-2,
        lr=1e-3,
        device="cpu",
    )
    before = load_file(base / "model.safetensors")

    heads_only = train(TrainConfig(out_dir=tmp_path / "heads", head_epochs=1, epochs=0, **common), progress=False)
    after = load_file(heads_only.out_dir / "model.safetensors")
    is_head = {name: name.startswith(HEAD_PARAMETERS[family]) for name in before}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "the heads stage changed nothing"
    assert all(is_head[name] for name in changed), sorted(n for n in changed if not is_head[n])

    both = train(TrainConfig(out_dir=tmp_path / "both", head_epochs=1, epochs=1, **common), progress=False)
    assert [entry["stage"] for entry in both.history] == ["heads", "all"]
    after_both = load_file(both.out_dir / "model.safetensors")
    assert any(not is_head[n] and not torch.equal(before[n], after_both[n]) for n in before)
