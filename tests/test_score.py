"""Scoring a generated test set with the metric registry: per-frame, per-clip and per-set values,
bootstrap intervals over clips, reference data checks, and failures that leave the rest scored."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    EVALUATE_OPTIONS,
    identity_faces,
    noisy,
    score_all,
    write_generated,
    write_test_set,
)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.options import Option
from lipsync.metrics import fid, registry, score
from lipsync.metrics.base import Column, Metric, Result
from lipsync.metrics.testset import TestSet


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A test set, its reference data and one scored noisy run."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("score")
    test_path = folder / "test.h5"
    faces = write_test_set(test_path)
    generated = folder / "lipgan-small.h5"
    write_generated(generated, noisy(faces, 10, seed=1))
    summary = score_all(folder, test_path, generated, EVALUATE_OPTIONS)
    return folder, faces, summary


def test_scores_tsv_has_every_frame_metric_equal_to_scikit_image(scored):
    folder, faces, _ = scored
    scores = pd.read_csv(folder / "metrics" / "lipgan-small" / "scores.tsv", sep="\t")
    generated = noisy(faces, 10, seed=1)
    assert list(scores.columns) == ["sample", "speaker", "clip", "frame", "ssim", "psnr"]
    assert scores["sample"].tolist() == list(range(len(faces)))
    assert scores["clip"].iloc[-1] == "lgaz8p" and scores["frame"].iloc[0] == 4
    for k in (0, 7):
        assert scores["ssim"][k] == pytest.approx(structural_similarity(
            generated[k], faces[k], channel_axis=-1, data_range=255), abs=1e-6)
        assert scores["psnr"][k] == pytest.approx(peak_signal_noise_ratio(
            faces[k], generated[k], data_range=255), abs=1e-9)


def test_clips_tsv_has_one_row_per_clip(scored):
    folder, _, _ = scored
    clips = pd.read_csv(folder / "metrics" / "lipgan-small" / "clips.tsv", sep="\t")
    assert clips[["speaker", "clip", "frames"]].values.tolist() == [["s1", "bbaf2n", 6],
                                                                     ["s2", "lgaz8p", 6]]


def test_summary_has_each_metric_with_protocol_value_interval_and_labels(scored):
    folder, faces, _ = scored
    summary = json.loads((folder / "metrics" / "lipgan-small" / "summary.json").read_text())
    assert summary["run"] == "lipgan-small" and summary["model"] == "lipgan"
    metrics = summary["metrics"]
    assert sorted(metrics) == ["fid", "kid", "psnr", "ssim"]
    assert metrics["fid"]["columns"]["fid"]["value"] > 0
    assert metrics["fid"]["extra"]["n_generated"] == metrics["fid"]["extra"]["n_reference"] == 12
    assert fid.RANDOM_WEIGHTS_LABEL in summary["labels"]
    assert any("fewer than the 64" in w for w in summary["warnings"])  # 12 images < 64 dims
    for name in metrics:
        assert metrics[name]["protocol"]["sample_count"] == len(faces)
        assert metrics[name]["failed"] is None
    assert metrics["fid"]["protocol"]["resize"].startswith("bilinear to 299x299")
    ssim = pd.read_csv(folder / "metrics" / "lipgan-small" / "scores.tsv", sep="\t")["ssim"]
    entry = metrics["ssim"]["columns"]["ssim"]
    assert entry["value"] == pytest.approx(ssim.mean()) and entry["min"] == pytest.approx(ssim.min())
    # Two clips: the interval of the mean spans the two clip means.
    clip_means = ssim.groupby(np.arange(12) // 6).mean()
    assert entry["ci_low"] == pytest.approx(clip_means.min())
    assert entry["ci_high"] == pytest.approx(clip_means.max())
    kid = metrics["kid"]["columns"]["kid"]
    assert kid["ci_low"] is not None and kid["ci_low"] <= kid["ci_high"]


def test_identity_frame_equal_to_ground_truth_has_infinite_psnr_left_out_of_means(scored):
    folder, faces, _ = scored
    write_generated(folder / "identity.h5", identity_faces(folder / "test.h5"), model="identity")
    summary = score_all(folder, folder / "test.h5", folder / "identity.h5", EVALUATE_OPTIONS)
    psnr = pd.read_csv(folder / "metrics" / "identity" / "scores.tsv", sep="\t")["psnr"]
    assert np.isinf(psnr[0]) and np.isfinite(psnr[1:]).all()
    entry = summary["metrics"]["psnr"]["columns"]["psnr"]
    assert entry["n_infinite"] == 1 and entry["n_finite"] == len(faces) - 1
    assert entry["value"] == pytest.approx(psnr[1:].mean())
    assert summary["metrics"]["ssim"]["columns"]["ssim"]["max"] == pytest.approx(1.0)
    json.loads((folder / "metrics" / "identity" / "summary.json").read_text())  # no Infinity


def test_generated_set_with_wrong_sample_count_is_refused(scored, tmp_path):
    folder, faces, _ = scored
    short = tmp_path / "short.h5"
    write_generated(short, faces[:-1])
    with pytest.raises(InputError, match="11 generated faces .* 12 samples"):
        score_all(folder, folder / "test.h5", short, EVALUATE_OPTIONS)


def test_reference_made_under_other_settings_is_refused(scored, tmp_path):
    folder, _, _ = scored
    other = {**EVALUATE_OPTIONS, "fid": {**EVALUATE_OPTIONS["fid"], "dims": 192}}
    with pytest.raises(InputError, match="other evaluate.fid settings"):
        score.score_run(folder / "lipgan-small.h5", folder / "test.h5",
                        {"fid": folder / "reference" / "fid.npz"}, tmp_path / "s.tsv",
                        tmp_path / "c.tsv", tmp_path / "s.json", options=other)
    assert not (tmp_path / "s.tsv").exists()


def test_reference_of_another_test_set_is_refused(scored, tmp_path):
    folder, _, _ = scored
    other_test = tmp_path / "test.h5"
    write_test_set(other_test, seed=5)
    with pytest.raises(InputError, match="other ground-truth faces"):
        score.score_run(folder / "lipgan-small.h5", other_test,
                        {"fid": folder / "reference" / "fid.npz"}, tmp_path / "s.tsv",
                        tmp_path / "c.tsv", tmp_path / "s.json", options=EVALUATE_OPTIONS)


def test_a_metric_that_cannot_run_is_recorded_and_the_others_finish(scored, tmp_path):
    folder, _, _ = scored
    options = {**EVALUATE_OPTIONS, "fid": {"weights": str(tmp_path / "missing.pth"),
                                           "dims": 64}}
    # The reference job records the failure instead of stopping the workflow.
    summary = score_all(tmp_path, folder / "test.h5", folder / "lipgan-small.h5", options)
    for name in ("fid", "kid"):
        assert "missing.pth" in summary["metrics"][name]["failed"]
        assert summary["metrics"][name]["columns"][name]["value"] is None
    assert summary["metrics"]["ssim"]["failed"] is None
    assert summary["metrics"]["ssim"]["columns"]["ssim"]["value"] > 0
    assert score.shown(summary["metrics"]["fid"]["columns"]["fid"]).startswith("n/a (")


class _Brightness(Metric):
    """Toy metric: mean brightness difference per frame (a test of the registry)."""

    @classmethod
    def protocol(cls, options):
        return {"what": "mean(generated) - mean(real) per frame", "scale": options["scale"]}

    def __init__(self, options, context):
        super().__init__(options, context)
        self.values = []

    def update(self, batch):
        difference = batch.generated.mean(axis=(1, 2, 3)) - batch.real.mean(axis=(1, 2, 3))
        self.values.append(difference * self.options["scale"])

    def result(self):
        return Result({"brightness": np.concatenate(self.values)})


@pytest.fixture
def toy_metric():
    registry.register_metric(
        "brightness", level="frame", options={"scale": Option(1.0, float, "brightness scale")},
        columns=(Column("brightness", "brightness difference", higher_is_better=False),),
    )(_Brightness)
    yield "brightness"
    registry.METRICS.pop("brightness")


def test_a_registered_toy_metric_is_scored_with_no_other_change(scored, tmp_path, toy_metric):
    folder, _, _ = scored
    options = {**EVALUATE_OPTIONS, "metrics": ["ssim", toy_metric], "brightness": {"scale": 2.0}}
    summary = score_all(tmp_path, folder / "test.h5", folder / "lipgan-small.h5", options)
    scores = pd.read_csv(tmp_path / "metrics" / "lipgan-small" / "scores.tsv", sep="\t")
    assert list(scores.columns)[-2:] == ["ssim", "brightness"]
    entry = summary["metrics"]["brightness"]
    assert entry["protocol"]["scale"] == 2.0
    assert entry["columns"]["brightness"]["value"] == pytest.approx(scores["brightness"].mean())


def test_unknown_metric_or_option_is_refused_naming_it():
    with pytest.raises(LipsyncError, match="unknown metric 'nope'"):
        registry.configured({"metrics": ["nope"]})
    with pytest.raises(LipsyncError, match=r"evaluate\.ssim: unknown option\(s\) windw"):
        registry.options("ssim", {"ssim": {"windw": 7}})
    with pytest.raises(LipsyncError, match=r"evaluate\.ssim\.data_range: 0: must be greater"):
        registry.options("ssim", {"ssim": {"data_range": 0}})


def test_compact_layout_png_faces_read_the_same_as_raw(tmp_path):
    raw, compact = tmp_path / "raw.h5", tmp_path / "compact.h5"
    faces = write_test_set(raw)
    write_test_set(compact)
    with h5py.File(compact, "a") as handle:
        del handle["faces"]
        encoded = handle.create_dataset("faces", (len(faces),), dtype=h5py.vlen_dtype(np.uint8))
        for k, face in enumerate(faces):  # lossless PNG of the RGB crop, stored BGR by OpenCV
            encoded[k] = cv2.imencode(".png", np.ascontiguousarray(face[..., ::-1]))[1].ravel()
        handle.attrs["layout"] = "compact"
    with TestSet(compact) as data:
        assert data.image_shape == (96, 96, 3)
        assert np.array_equal(data.ground_truth(0, len(faces)), faces)
        assert np.array_equal(data.references_of(np.array([5, 1, 5])),
                              faces[[2, 4, 2]])  # reference = three crops later in the clip
    with h5py.File(compact, "a") as handle:
        handle["faces"][3] = np.frombuffer(b"not a png", dtype=np.uint8)
    with TestSet(compact) as data, pytest.raises(InputError, match="crop 3 .* not a decodable"):
        data.ground_truth(0, 6)


def test_missing_test_set_names_the_file(tmp_path):
    with pytest.raises(LipsyncError, match="nothere.h5: file not found"):
        score.write_reference("fid", tmp_path / "nothere.h5", tmp_path / "r.npz",
                              options=EVALUATE_OPTIONS)
