"""A training process killed after a checkpoint resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from camtrace.embedding.encoder import ImageTextEncoder

# The crash: the same CLI run, SIGKILLed by itself right after optimizer step 7 (a checkpoint was written at 6).
_KILLED_RUN = """
import os, signal, sys
import camtrace.training.trainer as trainer
original = trainer.train
def train(config, progress=True, on_step=None):
    return original(config, progress, on_step=lambda step: step == 7 and os.kill(os.getpid(), signal.SIGKILL))
trainer.train = train
from camtrace.cli import main
sys.argv = ["camtrace", *sys.argv[1:]]
main()
"""


def _killed_run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _KILLED_RUN, *args], env=env, capture_output=True, text=True, timeout=300)


def _cli(args: list[str], **env: str):
    """The CLI in this process, on one thread as the killed process runs (same kernels, same sums)."""
    from camtrace.cli import cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(cli, args, env={"CAMTRACE_DEVICE": "cpu", **env})
    finally:
        torch.set_num_threads(threads)


def test_a_killed_run_resumes_to_the_same_weights(tiny_siglip_dir, footage, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAMTRACE_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    # 5 people: 3 train (36 crops) -> 4 steps of 8 per epoch; 1 heads epoch + 2 whole-model epochs = 12 steps.
    common = [
        "train",
        "--dataset",
        f"synthetic:{footage.root}",
        "--base",
        str(tiny_siglip_dir),
        "--head-epochs",
        "1",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--head-lr",
        "1e-3",
        "--batch-size",
        "8",
        "--images-per-identity",
        "2",
        "--checkpoint-every",
        "2",
        "--crops",
        "tight",
        "--no-register",
        "--no-progress",
        "--json",
    ]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"

    done = _cli([*common, "--out", str(reference)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["steps"] == 12

    killed = _killed_run([*common, "--out", str(crashed)], env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = sorted(p.name for p in (crashed / "checkpoints").glob("step-*.pt"))
    assert checkpoints == ["step-000000004.pt", "step-000000006.pt"]  # the two newest are kept
    assert not (crashed / "model.safetensors").exists()

    resumed = _cli([*common, "--out", str(crashed), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.output)
    assert (summary["resumed_from"], summary["steps"]) == (6, 12)
    assert [e["loss"] for e in summary["history"]] == [e["loss"] for e in json.loads(done.output)["history"]]

    expected, got = load_file(reference / "model.safetensors"), load_file(crashed / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.allclose(tensor, got[name], rtol=0, atol=1e-6), name
    assert not (crashed / "checkpoints").exists()  # cleaned up once the model is saved
    untrained = load_file(Path(tiny_siglip_dir) / "model.safetensors")
    assert not torch.equal(untrained["text_model.head.weight"], got["text_model.head.weight"])

    # The output is a plain checkpoint folder the encoder and `camtrace eval` load as they are.
    vectors = ImageTextEncoder(crashed, device="cpu").encode_texts(["red top, blue trousers"])
    assert vectors.shape[0] == 1
    report = tmp_path / "eval.json"
    # The data dir holds the runtime's exports (ONNX on a CPU), as for any model eval runs.
    result = _cli(
        [
            "eval",
            "--dataset",
            f"synthetic:{footage.root}",
            "--model",
            str(crashed),
            "--json",
            "--out",
            str(report),
            "--no-progress",
        ],
        CAMTRACE_DATA_DIR=str(tmp_path / "data"),
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(report.read_text())
    assert set(figures["text_to_identity"]) == {"top1", "top5", "top10", "mrr", "cmc_auc20", "queries", "images"}
    assert set(figures["image_reid"]) == {"top1", "top5", "top10", "map", "queries", "images"}
    assert figures["runtime"] == "onnx int8" and list((tmp_path / "data" / "exports").iterdir())
    assert json.loads(result.output) == figures


class _Crash(Exception):
    pass


def _crash_at(at: int):
    def on_step(step: int) -> None:
        if step == at:
            raise _Crash

    return on_step


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_siglip_dir, footage, tmp_path):
    from camtrace.errors import InputError
    from camtrace.training.trainer import TrainConfig, train

    config = TrainConfig(
        datasets=[f"synthetic:{footage.root}"],
        out_dir=tmp_path / "out",
        base=str(tiny_siglip_dir),
        head_epochs=1,
        epochs=0,
        batch_size=8,
        images_per_identity=2,
        checkpoint_every=1,
        device="cpu",
    )
    with pytest.raises(_Crash):
        train(config, progress=False, on_step=_crash_at(2))
    assert (tmp_path / "out" / "checkpoints" / "step-000000002.pt").is_file()
    with pytest.raises(InputError, match=r"other settings \(seed\); train into a new --out folder"):
        train(replace(config, seed=1), progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train(replace(config, out_dir=tmp_path / "empty", resume=True), progress=False)


def test_train_command_registers_the_model_with_its_validation_figures(tiny_siglip_dir, footage, tmp_path):
    from camtrace.cli import cli
    from camtrace.services import Services
    from camtrace.settings import Settings

    data_dir, out = tmp_path / "data", tmp_path / "model"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--dataset",
            f"synthetic:{footage.root}",
            "--base",
            str(tiny_siglip_dir),
            "--head-epochs",
            "1",
            "--epochs",
            "0",
            "--batch-size",
            "8",
            "--images-per-identity",
            "2",
            "--crops",
            "tight",
            "--out",
            str(out),
            "--no-progress",
            "--json",
        ],
        env={"CAMTRACE_DEVICE": "cpu", "CAMTRACE_DATA_DIR": str(data_dir)},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    services = Services(Settings(data_dir=data_dir))
    try:
        entry = services.registry.get(summary["model_id"])
    finally:
        services.close()
    assert Path(entry.folder) == out.resolve()
    assert entry.parent == str(tiny_siglip_dir)
    assert entry.datasets["train"] == [f"synthetic:{footage.root}"]
    assert entry.metrics["text_to_identity"] == summary["val_metrics"]["text_to_identity"]
