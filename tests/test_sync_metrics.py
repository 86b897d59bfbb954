"""LSE-D, LSE-C and the AV offset with an expert trained here on synthetic talking faces (whose
mouths follow the audio by construction): shifted video is found at its shift, other clips'
audio lowers LSE-C, and the metrics go through the registry's scorer like any other."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import write_generated

from lipsync.experts.sync import synthetic
from lipsync.experts.sync import train as sync_train
from lipsync.metrics import registry, score
from lipsync.metrics import sync as sync_metrics
from lipsync.metrics.testset import TestSet

# As short as gives a usable expert on any CPU: 60 steps of 32 windows on 2 x 5 synthetic clips
# (about 15 s on one idle core, 60 s on a busy one, hence `slow`). What a short run learns depends
# on the CPU's floating-point paths (0.77 vs 0.64 held-out accuracy on two machines), so the
# training seed stands in for another CPU's rounding: every bound below holds at seeds 0..9 and
# states its worst measured value (seed 9 learns the weakest expert). On 2 x 3 clips, seeds 4
# and 6 learnt experts that put real clips 8 to 15 frames off (seed 4: held-out AUC 0.565), and
# 120 steps on them still failed at seed 3 (three clips 9 to 15 frames off); 5 clips a speaker
# at 60 steps held, at the same cost (24.0 s before vs 22.5 s for this file's slow tests on a
# shared 2-core machine at load 2).
SPEAKERS = ("s1", "s2")
CLIPS_PER_SPEAKER = 5
EXPERT_OPTIONS = {"model": {"width": 0.125},
                  "training": {"batch_size": 32, "total_samples": 32 * 60, "learning_rate": 3e-3,
                               "validation_fraction": 0.34, "validation_every_samples": 10_000,
                               "checkpoint_every_samples": 10_000, "num_workers": 0,
                               "progress_bar": False, "device": "cpu"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic split (2 speakers x 5 clips) and an expert trained on 7 of its clips."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("lse")
    split = folder / "full.h5"
    synthetic.write_split(split, speakers=SPEAKERS, clips_per_speaker=CLIPS_PER_SPEAKER)
    summary = sync_train.train_expert(split, folder / "expert.pt", options=EXPERT_OPTIONS)
    return folder, split, summary


def _options(folder: Path) -> dict:
    return {"metrics": ["lse", "lse_public"], "lse": {"expert": str(folder / "expert.pt")},
            "batch_size": 100, "bootstrap": {"resamples": 50}}


@pytest.mark.slow
def test_expert_separates_in_sync_from_off_sync_on_held_out_clips(trained):
    _, _, summary = trained
    assert summary["held_out_clips"] == 3
    # Separation is asserted threshold-free: the AUC (chance 0.5; its standard error by chance
    # with 192 + 192 pairs is 0.030, so 0.6 is 3.4 of them above). Measured 0.897 at seed 0,
    # worst 0.674 over seeds 0..9 (seed 9; margin 0.074). The accuracy at logit 0 is not
    # asserted: it swings with the learnt bias (0.51..0.84 over those seeds, 0.508 at seed 9),
    # so any bound on it would rest on rounding, not on what the expert learnt.
    validation = summary["validation"]
    assert validation["auc"] > 0.6, validation
    assert validation["pairs"] == 384, validation  # 192 in-sync + 192 off-sync windows


def _clip_embeddings(folder: Path, split: Path, clip: int):
    """(video embeddings of all windows, their frames, audio embeddings, real faces) of a clip."""
    options = registry.options("lse", _options(folder))
    expert = sync_metrics.LSE._expert(options, "cpu")
    with TestSet(split) as test_set:
        row = test_set.clip_table().iloc[clip]
        audio = sync_metrics.LSE._embed_audio(expert, test_set, row, options, "cpu")
        samples = test_set.sample_table()
        mine = samples[(samples["speaker"] == row["speaker"]) & (samples["clip"] == row["clip"])]
        faces = test_set.ground_truth_of(mine["sample"].to_numpy())
        frames = mine["frame"].to_numpy()
    return expert, options, faces, frames, audio


@pytest.mark.slow
@pytest.mark.parametrize("shift", list(range(-5, 6)))
def test_video_shifted_by_k_frames_is_found_at_offset_k(trained, shift):
    folder, split, summary = trained
    held_out = {tuple(key) for key in summary_held_out(folder)}
    with TestSet(split) as test_set:
        keys = list(test_set.clip_table()[["speaker", "clip"]].itertuples(index=False,
                                                                           name=None))
    clip = next(k for k, key in enumerate(keys) if key in held_out)  # never trained on
    expert, options, faces, frames, audio = _clip_embeddings(folder, split, clip)
    # frame f of the shifted video shows what the real video showed at f - shift
    shown = np.arange(frames[0] + 5, frames[-1] - 5 + 1)
    shifted = faces[shown - shift - frames[0]]
    curve = sync_metrics.LSE._video_curve(expert, shifted, shown, audio, options, "cpu")
    lse_d, lse_c, offset = sync_metrics.lse_of_curve(curve, options["offsets"])
    # Found exactly at seeds 0..7 on the clip used here, within one frame at seeds 8 and 9 (4 and
    # 5 of the 11 shifts one frame off), hence the one-frame bound. Other held-out clips of the
    # weakest expert (seed 9) are found up to 7 frames off: only this clip is asserted.
    assert abs(offset - shift) <= 1
    assert lse_c > 0 and lse_d == pytest.approx(np.nanmin(curve))


def summary_held_out(folder: Path) -> list:
    return torch.load(folder / "expert.pt", weights_only=False)["held_out_clips"]


@pytest.mark.slow
def test_real_clips_have_higher_lse_c_than_with_other_clips_audio(trained):
    folder, split, _ = trained
    matched, mismatched = [], []
    n_clips = len(SPEAKERS) * CLIPS_PER_SPEAKER
    clips = [_clip_embeddings(folder, split, k) for k in range(n_clips)]
    for k, (expert, options, faces, frames, audio) in enumerate(clips):
        other_audio = clips[(k + CLIPS_PER_SPEAKER) % n_clips][4]  # the other speaker's clip
        for sound, into in ((audio, matched), (other_audio, mismatched)):
            curve = sync_metrics.LSE._video_curve(expert, faces, frames, sound, options, "cpu")
            into.append(sync_metrics.lse_of_curve(curve, options["offsets"])[1])
    # Median minus minimum of a curve is never 0, so unrelated audio still scores about 2/3 of
    # the real audio's LSE-C. Mean ratio matched / mismatched: 1.60 at seed 0, at least 1.39 at
    # seeds 0..8, 1.20 at seed 9 (bound 1.1, margin 0.10). Clip by clip it is not asserted: at
    # seeds 2 and 9 some clips score their own audio below the other speaker's.
    assert np.mean(matched) > 1.1 * np.mean(mismatched), (matched, mismatched)


@pytest.mark.slow
def test_scorer_writes_lse_per_clip_and_public_lse_as_na_without_weights(trained):
    folder, split, _ = trained
    options = _options(folder)
    references = {}
    for name in registry.reference_metrics(options):
        references[name] = folder / f"{name}.npz"
        score.write_reference(name, split, references[name], options=options)
    with h5py.File(split, "r") as handle:
        real = handle["faces"][()][handle["samples/crop"][()]]
    write_generated(folder / "real.h5", real)
    out = folder / "metrics" / "real"
    summary = score.score_run(folder / "real.h5", split, references, out / "scores.tsv",
                              out / "clips.tsv", out / "summary.json", options=options)
    clips = np.genfromtxt(out / "clips.tsv", delimiter="\t", names=True, dtype=None,
                          encoding=None)
    # Every real clip is found in sync at seeds 0..9 within one frame: exactly, but for one or two
    # clips one frame off at seeds 2, 6 and 8 and five clips at seed 9.
    assert len(clips) == len(SPEAKERS) * CLIPS_PER_SPEAKER
    assert (np.abs(clips["av_offset"]) <= 1).all(), clips["av_offset"]
    lse = summary["metrics"]["lse"]
    assert lse["failed"] is None and lse["columns"]["lse_c"]["higher_is_better"]
    assert lse["extra"]["real_clips"]["lse_d"] == pytest.approx(lse["columns"]["lse_d"]["value"])
    assert sync_metrics.OWN_LABEL in summary["labels"]
    assert "T" not in lse["protocol"] and lse["protocol"]["frames_per_window"] == 5
    public = summary["metrics"]["lse_public"]
    assert public["columns"]["public_lse_d"]["value"] is None
    assert "evaluate.lse_public.weights" in public["columns"]["public_lse_d"]["reason"]
    assert json.loads((out / "summary.json").read_text())["metrics"]["lse"]["level"] == "clip"


def test_lse_inputs_name_the_expert_file_so_the_workflow_trains_it_first():
    options = {"metrics": ["lse", "lse_public"]}
    assert registry.input_files(options) == ["results/syncnet/expert.pt"]


def test_public_lse_inputs_list_the_weights_and_each_speakers_manifest():
    options = {"metrics": ["lse_public"], "lse_public": {"weights": "w/syncnet_v2.model"}}
    assert registry.input_files(options, ["s1", "s2"]) == [
        "w/syncnet_v2.model", "results/corpus/s1.tsv", "results/corpus/s2.tsv"]
    assert registry.input_files({"metrics": ["lse_public"]}, ["s1"]) == []


def test_mfcc_has_100_steps_per_second_and_13_coefficients():
    rng = np.random.default_rng(0)
    features = sync_metrics.mfcc(rng.normal(0, 3000, 16000 * 3), 16000)
    assert features.shape == (299, 13) and np.isfinite(features).all()
