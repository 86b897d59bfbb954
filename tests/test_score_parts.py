"""Scoring one metric per job, then merging a system's parts: the same files, values and summary as
scoring every metric in one pass, so the workflow can rescore one metric alone."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import EVALUATE_OPTIONS, noisy, write_generated, write_test_set

from lipsync.core.errors import InputError
from lipsync.metrics import registry, score


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory):
    """One noisy run scored in one pass and metric by metric, then merged."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("parts")
    test_path, generated = folder / "test.h5", folder / "lipgan-small.h5"
    faces = write_test_set(test_path)
    write_generated(generated, noisy(faces, 10, seed=1))
    one_pass = score.score_with_references(generated, test_path, folder / "reference",
                                           folder / "one-pass", options=EVALUATE_OPTIONS)
    references = {name: folder / "reference" / f"{name}.npz"
                  for name in registry.reference_metrics(EVALUATE_OPTIONS)}
    parts = []
    for metric in EVALUATE_OPTIONS["metrics"]:
        parts.append(folder / "parts" / f"{metric}.json")
        score.score_metric(generated, test_path, metric, references, parts[-1],
                           parts[-1].with_suffix(".tsv"), options=EVALUATE_OPTIONS)
    merged = folder / "merged"
    summary = score.merge_scores(parts, test_path, merged / "scores.tsv", merged / "clips.tsv",
                                 merged / "summary.json")
    return folder, one_pass, summary


def test_merged_rows_equal_one_pass(both_ways):
    folder, _, _ = both_ways
    for name in ("scores.tsv", "clips.tsv"):
        pd.testing.assert_frame_equal(pd.read_csv(folder / "merged" / name, sep="\t"),
                                      pd.read_csv(folder / "one-pass" / name, sep="\t"))


def test_merged_summary_equals_one_pass_metric_by_metric(both_ways):
    _, one_pass, merged = both_ways
    assert merged["metric_order"] == one_pass["metric_order"] == EVALUATE_OPTIONS["metrics"]
    assert merged["metrics"] == json.loads(json.dumps(one_pass["metrics"]))
    for key in ("run", "model", "n_samples", "n_clips", "labels", "warnings", "bootstrap"):
        assert merged[key] == one_pass[key], key


def test_a_set_metric_part_carries_only_the_clips(both_ways):
    folder, _, _ = both_ways
    rows = pd.read_csv(folder / "parts" / "fid.tsv", sep="\t")
    assert list(rows.columns) == ["speaker", "clip", "frames"]
    frame_rows = pd.read_csv(folder / "parts" / "ssim.tsv", sep="\t")
    assert list(frame_rows.columns) == ["sample", "speaker", "clip", "frame", "ssim"]


def test_a_part_of_another_test_set_is_refused(both_ways, tmp_path):
    folder, _, _ = both_ways
    part = json.loads((folder / "parts" / "ssim.json").read_text())
    part["n_samples"] = 5
    (tmp_path / "ssim.json").write_text(json.dumps(part))
    (tmp_path / "ssim.tsv").write_text((folder / "parts" / "ssim.tsv").read_text())
    with pytest.raises(InputError, match="scores 5 samples"):
        score.merge_scores([tmp_path / "ssim.json"], folder / "test.h5", tmp_path / "s.tsv",
                           tmp_path / "c.tsv", tmp_path / "summary.json")
