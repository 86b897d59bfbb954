"""Resuming past a damaged checkpoint, and a missing training set named on the command line."""

from __future__ import annotations

import logging

import pytest
import torch
from fakes import FakeLipSyncDataset

from lipsync import cli
from lipsync.core.errors import LipsyncError
from lipsync.training import checkpoint as ckpt
from lipsync.training.loop import training_loop

TINY_RUN = {"batch_size": 4, "checkpoint_every_samples": 8, "log_every_samples": 8,
            "num_workers": 0, "progress_bar": False, "device": "cpu", "keep_checkpoints": 3}


def fake_state(samples: int) -> dict:
    return {"networks": {"generator": {"w": torch.full((2,), float(samples))}}, "model": "lipgan",
            "samples": samples}


def truncate(path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_newest_checkpoint_is_skipped_for_the_one_before(tmp_path, caplog):
    for samples in (8, 16, 24):
        ckpt.save(ckpt.checkpoint_path(tmp_path, samples), fake_state(samples))
    newest = ckpt.checkpoint_path(tmp_path, 24)
    truncate(newest)
    with caplog.at_level(logging.WARNING):
        path, state = ckpt.latest_loadable_checkpoint(tmp_path)
    assert path == ckpt.checkpoint_path(tmp_path, 16) and state["samples"] == 16
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 1 and str(newest) in skipped[0]
    assert "not a readable torch checkpoint" in skipped[0]  # and why


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert ckpt.latest_loadable_checkpoint(tmp_path / "none") == (None, None)


def test_when_no_checkpoint_loads_the_run_stops_instead_of_starting_over(tmp_path):
    for samples in (8, 16):
        ckpt.save(ckpt.checkpoint_path(tmp_path, samples), fake_state(samples))
        truncate(ckpt.checkpoint_path(tmp_path, samples))
    with pytest.raises(LipsyncError, match="no checkpoint in .* loads"):
        ckpt.latest_loadable_checkpoint(tmp_path)


def train(run_dir, total_samples):
    return training_loop(train_set=FakeLipSyncDataset(12), run_dir=run_dir, model="lipgan",
                         model_options={"width": 0.0625}, total_samples=total_samples,
                         **TINY_RUN)


def test_training_resumes_from_the_previous_checkpoint_when_the_newest_is_truncated(tmp_path):
    torch.set_num_threads(1)
    whole = train(tmp_path / "whole", 24)
    train(tmp_path / "split", 16)
    checkpoints = ckpt.list_checkpoints(tmp_path / "split" / "checkpoints")
    assert checkpoints[-1].name == "checkpoint-000000000016.pt"
    truncate(checkpoints[-1], keep=checkpoints[-1].stat().st_size // 2)
    resumed = train(tmp_path / "split", 24)
    assert resumed["resumed_from"].endswith("checkpoint-000000000008.pt")
    expected, got = (ckpt.load(whole["output"])["networks"]["generator"],
                     ckpt.load(resumed["output"])["networks"]["generator"])
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_train_with_a_missing_training_set_names_it_and_exits_1(tmp_path, capsys):
    missing = tmp_path / "missing.h5"
    code = cli.main(["train", "--train-set", str(missing), "--run-dir", str(tmp_path / "run"),
                     "--output", str(tmp_path / "generator.pt")])
    err = capsys.readouterr().err
    assert code == 1
    assert str(missing) in err and "not found" in err and "Traceback" not in err
