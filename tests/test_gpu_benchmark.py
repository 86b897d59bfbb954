"""benchmarks/gpu.py on CPU (the GPU command's CI run) and the data subset it reads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lipsync import cli
from lipsync.core.errors import InputError
from lipsync.data.dataset import LipSyncDataset
from lipsync.data.subset import MAX_BYTES, subset_files, synthetic_subset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_smoke_run_passes_on_cpu_and_marks_gpu_only_rows_skipped(tmp_path):
    # the exact call CI makes: no subset folder, so synthetic crops; tiny sizes
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--output", str(tmp_path),
                           "--data", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    rows = {(r["check"], r["precision"]): r for r in report["rows"]}
    assert report["failed"] == 0
    for model in ("lipgan", "l1wgan_gp", "wgan_gp"):
        float32 = rows[(f"train {model}", "float32")]
        assert float32["status"] == "ok" and float32["rate"] > 0
        assert "decrease not asserted" in float32["note"]  # 3 steps prove finiteness only
        if not torch.cuda.is_available():
            for precision in ("bf16", "fp16"):
                assert rows[(f"train {model}", precision)]["status"] == "skipped: no CUDA device"
    checks = {r["check"]: r for r in report["rows"]}
    for check in ("loader", "training_loop lipgan", "generate test set",
                  "FID Inception features", "SSIM+PSNR batched vs scikit-image",
                  "S3FD face detection"):
        assert checks[check]["status"] == "ok" and checks[check]["rate"] > 0, check
    if not torch.cuda.is_available():  # the 2-process path runs with gloo instead of NCCL
        assert "backend gloo" in checks["training_loop lipgan x2 processes"]["note"]
    table = (tmp_path / "gpu.md").read_text()
    assert "| check | device | precision | status |" in table
    assert table.splitlines()[0] in done.stdout  # the same table is printed


def test_a_failing_check_makes_the_command_exit_non_zero(tmp_path, monkeypatch):
    gpu = _benchmark()

    def broken(row, *args):
        raise gpu.CheckFailed("scores differ")

    def quiet(row, *args):
        row.rate, row.unit = 1.0, "items/s"

    for name in ("check_training", "check_training_loop", "check_two_processes",
                 "check_generation", "check_fid", "check_detection"):
        monkeypatch.setattr(gpu, name, quiet)
    monkeypatch.setattr(gpu, "check_ssim_psnr", broken)
    code = gpu.main(["--smoke", "--output", str(tmp_path), "--data", str(tmp_path / "absent")])
    assert code == 1
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["failed"] == 1
    failed = [r for r in report["rows"] if r["status"].startswith("FAIL")]
    assert [r["check"] for r in failed] == ["SSIM+PSNR batched vs scikit-image"]
    assert "scores differ" in failed[0]["status"]


def test_losses_must_be_finite_and_fall_once_there_are_enough_of_them():
    gpu = _benchmark()
    enough = gpu.MIN_VALUES_FOR_DECREASE
    falling = list(np.linspace(1.0, 0.5, enough))
    assert "0.5" in gpu.loss_note({"g_l1": falling}, "g_l1")
    with pytest.raises(gpu.CheckFailed, match="did not go down"):
        gpu.loss_note({"g_l1": falling[::-1]}, "g_l1")
    with pytest.raises(gpu.CheckFailed, match="non-finite"):
        gpu.loss_note({"g_l1": falling, "d_real": [1.0, float("nan")]}, "g_l1")
    # too few values to tell learning from noise: finite is all that is checked
    assert "decrease not asserted" in gpu.loss_note({"g_l1": [0.5, 0.6]}, "g_l1")


def test_a_subset_folder_with_one_split_only_is_an_error_naming_it(tmp_path):
    gpu = _benchmark()
    (tmp_path / "train.h5").touch()
    with pytest.raises(InputError, match="test.h5|not the other split") as raised:
        gpu.prepare_data(tmp_path, tmp_path / "work", batch_size=8)
    assert str(tmp_path) in str(raised.value)


def test_synthetic_subset_is_a_train_and_test_split_the_dataset_reads(tmp_path):
    summary = synthetic_subset(tmp_path, train_clips=2, test_clips=1)
    train, test = subset_files(tmp_path)
    assert len(LipSyncDataset(train)) == summary["train"]["samples"] == 2 * 68
    assert LipSyncDataset(test).fixed_reference  # the test split stores its references
    assert not set(summary["train"]["clips"]) & set(summary["test"]["clips"])
    assert json.loads((tmp_path / "subset.json").read_text())["bytes"] == summary["bytes"]
    assert not list(tmp_path.glob(".work-*"))  # intermediate shards are gone


def test_pack_subset_packs_disjoint_compact_splits_of_real_clips(grid_s1, tmp_path):
    code = cli.main(["pack-subset", "--root", str(grid_s1), "--output", str(tmp_path),
                     "--train-clips", "1", "--test-clips", "1"])
    assert code == 0
    summary = json.loads((tmp_path / "subset.json").read_text())
    assert len(summary["train"]["clips"]) == 1 and len(summary["test"]["clips"]) == 1
    assert not set(summary["train"]["clips"]) & set(summary["test"]["clips"])
    for name in ("train.h5", "test.h5"):
        with h5py.File(tmp_path / name, "r") as handle:
            assert handle.attrs["layout"] == "compact"
    faces = LipSyncDataset(tmp_path / "test.h5").read_faces(np.arange(4))
    assert faces.shape == (4, 96, 96, 3) and faces.std() > 10  # real crops, not blank
    assert summary["bytes"] < MAX_BYTES
