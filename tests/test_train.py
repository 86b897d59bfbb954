"""The training loop, against a generator pair and the sync expert alike: bit-identical resume,
SIGTERM checkpointing, NaN stop; and the generator's entry on real packed data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from fakes import FakeLipSyncDataset
from helpers import make_shard_files
from torch.utils.data import Dataset

from lipsync.core.errors import LipsyncError, TrainingError
from lipsync.experts.sync import synthetic
from lipsync.experts.sync.dataset import SyncWindows
from lipsync.experts.sync.train import expert_trainee
from lipsync.training import checkpoint as ckpt
from lipsync.training.loop import (
    TrainingInterrupted,
    epoch_order,
    evaluate,
    generator_trainee,
    run_training,
    train_run,
    training_loop,
)

TINY_RUN = {"batch_size": 4, "checkpoint_every_samples": 8, "log_every_samples": 8,
            "num_workers": 0, "progress_bar": False, "device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(run_dir, total_samples, model="lipgan", dataset=None, **options):
    model_options = {"width": 0.0625, **({"n_critic": 2} if model != "lipgan" else {})}
    return training_loop(train_set=dataset or FakeLipSyncDataset(12), run_dir=run_dir,
                         model=model, model_options=model_options,
                         total_samples=total_samples, **{**TINY_RUN, **options})


def generator_state(path):
    return ckpt.load(path)["networks"]["generator"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- the loop, against every kind of network it trains ------------------------------------------


class Faulty(Dataset):
    """`dataset` whose item `nan_at` has NaN in every float tensor (a corrupt sample) and whose
    reading of item `sigterm_at` sends SIGTERM to this process (SLURM's time limit), once."""

    def __init__(self, dataset, *, nan_at=None, sigterm_at=None):
        self.dataset, self.nan_at, self.sigterm_at = dataset, nan_at, sigterm_at

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index):
        if index == self.sigterm_at:
            import os
            import signal

            self.sigterm_at = None
            os.kill(os.getpid(), signal.SIGTERM)
        item = dict(self.dataset[index])
        if index == self.nan_at:
            item = {k: v.float() * float("nan") if v.is_floating_point() else v
                    for k, v in item.items()}
        return item


@pytest.fixture(scope="module")
def sync_split(tmp_path_factory):
    """Two short synthetic clips (30 frames each), packed: 38 expert windows."""
    path = tmp_path_factory.mktemp("sync") / "full.h5"
    synthetic.write_split(path, speakers=("s1",), clips_per_speaker=2, n_frames=30)
    return path


@pytest.fixture(params=["lipgan", "l1wgan_gp", "syncnet"])
def network(request, sync_split):
    """(trainee, a fresh training set) of a generator pair or of the sync expert."""
    if request.param == "syncnet":
        trainee = expert_trainee({"width": 0.0625, "embedding": 32}, {"learning_rate": 1e-3})
        return trainee, lambda: SyncWindows(sync_split, frames=5, window=16)
    model_options = {"width": 0.0625, **({"n_critic": 2} if request.param != "lipgan" else {})}
    return generator_trainee(request.param, model_options), lambda: FakeLipSyncDataset(12)


def run(network, run_dir, total_samples, fault=None, **options):
    trainee, dataset = network
    data = Faulty(dataset(), **(fault or {}))
    return run_training(trainee, train_set=data, run_dir=run_dir, output=run_dir / "out.pt",
                        total_samples=total_samples, **{**TINY_RUN, **options})


def exported(network, path):
    (name,) = network[0].exports
    return ckpt.load(path)["networks"][name]


def test_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_run(tmp_path, network):
    # batch 4 over 12 (generator) or 38 (expert) samples: the stop at 20 falls mid-epoch.
    whole = run(network, tmp_path / "whole", 40)
    first = run(network, tmp_path / "split", 20)
    assert first["samples"] == 20
    second = run(network, tmp_path / "split", 40)
    assert second["resumed_from"].endswith("checkpoint-000000000020.pt")
    assert_same_weights(exported(network, whole["output"]), exported(network, second["output"]))
    # and training did move the weights
    fresh = run(network, tmp_path / "short", 4)
    assert any(not torch.equal(a, b) for a, b in zip(
        exported(network, fresh["output"]).values(), exported(network, whole["output"]).values(),
        strict=True))


def test_sigterm_saves_a_checkpoint_then_a_rerun_resumes_to_the_same_weights(tmp_path, network):
    whole = run(network, tmp_path / "whole", 32)
    # the sample read in the 2nd batch of epoch 0 sends SIGTERM, as SLURM does at its limit
    trigger = int(epoch_order(len(network[1]()), 0, 0)[5])
    with pytest.raises(TrainingInterrupted, match="SIGTERM at sample 8") as stopped:
        run(network, tmp_path / "run", 32, {"sigterm_at": trigger}, checkpoint_every_samples=1000)
    saved = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert saved is not None and str(saved) in str(stopped.value)
    assert ckpt.load(saved)["samples"] == 8
    assert not (tmp_path / "run" / "out.pt").exists()
    resumed = run(network, tmp_path / "run", 32, checkpoint_every_samples=1000)
    assert resumed["resumed_from"] == str(saved)
    assert_same_weights(exported(network, whole["output"]), exported(network, resumed["output"]))


def test_non_finite_loss_stops_with_an_error_naming_the_last_good_checkpoint(tmp_path, network):
    bad = int(epoch_order(len(network[1]()), 0, 0)[9])  # in the 3rd batch, after the save at 8
    with pytest.raises(TrainingError, match="non-finite") as error:
        run(network, tmp_path / "run", 40, {"nan_at": bad})
    good = tmp_path / "run" / "checkpoints" / "checkpoint-000000000008.pt"
    assert f"last good checkpoint: {good}" in str(error.value)
    assert good.exists()


def test_a_checkpoint_names_the_networks_it_holds_and_loads_without_a_generator(tmp_path,
                                                                                network):
    run(network, tmp_path / "run", 8)
    state = ckpt.load(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))
    trainee = network[0]
    assert state["model"] == trainee.model and state["samples"] == 8
    assert set(state["networks"]) == set(state["optimizers"])  # every network here learns
    assert set(trainee.exports) < set(state["networks"]) or trainee.model == "syncnet"
    assert {"config", "rng", "provenance", "step"} <= set(state)


# --- the generator pairs' entry ------------------------------------------------------------------


def test_resuming_with_other_model_options_is_refused(tmp_path):
    train(tmp_path / "run", 8)
    with pytest.raises(LipsyncError, match="model_options"):
        training_loop(train_set=FakeLipSyncDataset(12), run_dir=tmp_path / "run",
                      model_options={"width": 0.125}, total_samples=16, **TINY_RUN)


def test_train_run_on_a_packed_split_writes_a_self_describing_generator(tmp_path):
    from lipsync.data.pack import pack_split

    shards = make_shard_files(tmp_path, clips=2, n_frames=20, mel_steps=70)
    clips = tmp_path / "clips.tsv"
    pd.DataFrame([("s1", c) for c in shards.clips["s1"]], columns=["speaker", "clip"]).to_csv(
        clips, sep="\t", index=False)
    packed = tmp_path / "small.h5"
    pack_split("small", clips, shards.faces, shards.mels, packed, options={})
    output = tmp_path / "generator.pt"
    options = {"model": "l1wgan_gp", "model_options": {"width": 0.0625, "n_critic": 2},
               "total_samples": 8, **TINY_RUN}
    train_run(packed, tmp_path / "run", output, options=options, validation_set=packed)
    generator, info = ckpt.load_generator(output)
    assert info["model"] == "l1wgan_gp" and info["model_options"]["n_critic"] == 2
    assert info["config"]["train_set"] == str(packed)
    assert "libraries" in info["provenance"]
    assert set(info["validation"]) >= {"l1", "ssim", "psnr"}
    saved = json.loads((tmp_path / "run" / "training_options.json").read_text())
    assert saved["model_options"]["width"] == 0.0625
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert any("validation_ssim" in json.loads(line) for line in lines)
    with pytest.raises(LipsyncError, match="bach_size"):
        train_run(packed, tmp_path / "other", output, options={"bach_size": 4})


@pytest.mark.parametrize(("options", "key"), [
    ({"batch_size": -8}, "batch_size: -8"),  # used to hang, deaf to SIGTERM
    ({"total_samples": -16}, "total_samples: -16"),  # used to write an untrained generator
    ({"batch_size": 0}, "batch_size: 0"),
    ({"checkpoint_every_samples": 0}, "checkpoint_every_samples: 0"),
    ({"batch_size": "8"}, "batch_size: '8'"),
    ({"mixed_precision": "fp8"}, "mixed_precision: 'fp8'"),
    ({"model_options": {"width": 0.0625, "n_critic": 0}}, "n_critic: 0"),
    ({"epochs": 2}, "unknown option(s) epochs"),
])
def test_a_bad_option_is_refused_naming_it_before_anything_is_written(tmp_path, options, key):
    model_options = options.pop("model_options", {"width": 0.0625})
    with pytest.raises(LipsyncError) as error:
        training_loop(train_set=FakeLipSyncDataset(12), run_dir=tmp_path / "run",
                      model="l1wgan_gp", model_options=model_options,
                      **{**TINY_RUN, "total_samples": 8, **options})
    assert key in str(error.value)
    assert not (tmp_path / "run").exists()


def test_validation_scores_are_the_reported_metrics_ssim_and_psnr():
    from lipsync.metrics.ssim_psnr import psnr_torch, ssim_torch

    dataset = FakeLipSyncDataset(6)
    scores = evaluate(None, dataset)  # the identity baseline: the reference frame as output
    frames = {key: torch.stack([torch.round(dataset[i][key] * 255).to(torch.uint8)
                                for i in range(6)]).permute(0, 2, 3, 1)
              for key in ("reference", "target")}
    assert scores["samples"] == 6
    assert scores["ssim"] == pytest.approx(ssim_torch(frames["reference"],
                                                      frames["target"]).mean(), abs=1e-12)
    assert scores["psnr"] == pytest.approx(psnr_torch(frames["reference"],
                                                      frames["target"]).mean(), abs=1e-9)


def test_snapshots_are_generators_at_fractions_of_training_kept_after_pruning(tmp_path):
    from lipsync.training.checkpoint import load_generator
    from lipsync.training.loop import publish_snapshots, snapshot_samples

    assert snapshot_samples(24, 2) == [8, 16]
    train(tmp_path / "run", 24, snapshots=2, keep_checkpoints=1)
    published = publish_snapshots(tmp_path / "run", 24, 2, tmp_path / "progress")
    assert [p.name for p in published] == ["1.pt", "2.pt"]
    for path, at in zip(published, (8, 16), strict=True):
        _, info = load_generator(path)
        assert info["samples"] == at and info["model"] == "lipgan"
    with pytest.raises(LipsyncError, match="snapshot 1 is missing"):
        publish_snapshots(tmp_path / "run", 30, 2, tmp_path / "other")  # another schedule


def test_a_run_resumed_past_a_snapshot_point_it_never_wrote_writes_it_late(tmp_path):
    from lipsync.training.checkpoint import load_generator
    from lipsync.training.loop import publish_snapshots

    train(tmp_path / "run", 16, snapshots=0)  # a run whose length then changes
    train(tmp_path / "run", 24, snapshots=2)  # points at 8 and 16 are already behind it
    (first, second) = publish_snapshots(tmp_path / "run", 24, 2, tmp_path / "progress")
    assert load_generator(first)[1]["samples"] == load_generator(second)[1]["samples"] == 20
    # Resumed past its (shortened) end: no batch runs, the snapshot is still written.
    train(tmp_path / "run", 8, snapshots=1)
    (only,) = publish_snapshots(tmp_path / "run", 8, 1, tmp_path / "short")
    assert load_generator(only)[1]["samples"] == 24
