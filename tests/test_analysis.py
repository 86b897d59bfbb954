"""Defect sets, the sensitivity study and metric agreement on small hand-made test sets."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    EVALUATE_OPTIONS,
    identity_faces,
    noisy,
    patterned_crop,
    score_all,
    smooth_faces,
    write_generated,
    write_test_set,
)
from scipy import stats

from lipsync.analysis import agreement, defects, sensitivity
from lipsync.metrics.testset import TestSet

CLIPS = [("s1", f"c{k}") for k in range(4)]
# Pixel metrics only: they make the study's point and keep the test fast (every system is
# scored); the registry makes any other metric take part the same way.
OPTIONS = {**EVALUATE_OPTIONS, "metrics": ["ssim", "psnr"]}


def _patterned_test_set(path, crops_per_clip=10):
    faces = np.stack([patterned_crop(c, f, 96) for c in range(len(CLIPS))
                      for f in range(crops_per_clip)])
    write_test_set(path, faces=faces, clips=CLIPS, crops_per_clip=crops_per_clip)
    return faces


def test_desync_takes_the_lower_half_from_k_frames_later_in_the_same_clip(tmp_path):
    faces = _patterned_test_set(tmp_path / "test.h5")
    output = defects.make_defect_set(tmp_path / "test.h5", "desync", 3, tmp_path / "d.h5")
    with h5py.File(output, "r") as handle:
        made = handle["faces"][()]
        assert handle.attrs["kind"] == "desync" and handle.attrs["strength"] == 3
    assert made.shape == faces.shape
    # Red encodes the frame within the clip, green the clip: upper half untouched, lower half
    # from frame t + 3 (reflected at the clip's end: frame 8 -> 11 -> 9 of 0..9).
    assert np.array_equal(made[:, :48], faces[:, :48])
    lower_frames = made[:, 60, 0, 0].reshape(4, 10)
    assert lower_frames[0].tolist() == [3, 4, 5, 6, 7, 8, 9, 8, 7, 6]
    assert np.array_equal(made[:, 60, 0, 1], faces[:, 60, 0, 1])  # same clip


def test_frozen_mouth_uses_the_reference_and_blur_jpeg_noise_colour_change_the_whole_face(
        tmp_path):
    faces = write_test_set(tmp_path / "test.h5")
    references = identity_faces(tmp_path / "test.h5")
    with TestSet(tmp_path / "test.h5") as data:
        frozen = defects.apply("frozen", 1, data, 0, 12)
        assert np.array_equal(frozen[:, 48:], references[:, 48:])
        assert np.array_equal(frozen[:, :48], faces[:, :48])
        for kind, strength in (("blur", 2), ("jpeg", 10), ("noise", 10), ("colour", 20)):
            changed = defects.apply(kind, strength, data, 0, 12).astype(int) - faces
            assert np.abs(changed[:, :48]).mean() > 0.5 and np.abs(changed[:, 48:]).mean() > 0.5
        # Seeded per sample: the same noise whatever the batching.
        assert np.array_equal(defects.apply("noise", 5, data, 0, 12)[7],
                              defects.apply("noise", 5, data, 6, 12)[1])


def test_unknown_defect_kind_is_refused(tmp_path):
    write_test_set(tmp_path / "test.h5")
    with pytest.raises(Exception, match="unknown defect kind 'smear'"):
        defects.make_defect_set(tmp_path / "test.h5", "smear", 1, tmp_path / "x.h5")


def test_normalisation_puts_each_metric_between_its_real_value_and_its_largest_change():
    rows = pd.DataFrame({
        "kind": ["blur", "blur", "desync", "desync"], "strength": [1.0, 2.0, 1.0, 2.0],
        "metric": "ssim", "column": "ssim", "higher_is_better": True,
        "value": [0.9, 0.6, 0.99, 0.98]})
    out = sensitivity.normalise(rows, {"ssim": 1.0})
    assert out["normalised"].round(6).tolist() == [0.25, 1.0, 0.025, 0.05]
    table = sensitivity.sensitivity_table(out)
    assert table.set_index("column").loc["ssim", "desync"] == pytest.approx(0.05)
    assert "desync: barely moved (< 10% of their largest reaction): ssim" in \
        sensitivity.blind_spots(table)


def test_spearman_and_kendall_agree_with_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    frame = pd.DataFrame({"ssim": a, "lmd": -a + rng.normal(0, 0.5, 40), "psnr": a ** 3})
    directions = {"ssim": True, "lmd": False, "psnr": True}
    matrix = agreement.spearman_matrix(agreement.oriented(frame, directions))
    assert matrix.loc["ssim", "lmd"] == pytest.approx(stats.spearmanr(a, frame["lmd"] * -1)[0])
    assert matrix.loc["ssim", "psnr"] == pytest.approx(1.0)
    correlations = pd.DataFrame([
        {"run": "r", "level": "frame", "a": "ssim", "b": "psnr", "spearman": 0.9, "n": 9},
        {"run": "r", "level": "frame", "a": "ssim", "b": "kid", "spearman": 0.1, "n": 9}])
    assert agreement.least_agreeing(correlations) == ("ssim", "kid")
    assert "ssim and kid least (0.10)" in agreement.paragraph(correlations, pd.DataFrame())


@pytest.fixture(scope="module")
def scored_systems(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("analysis")
    test_path = folder / "test.h5"
    clips = [("s1", f"c{k}") for k in range(4)]
    faces = write_test_set(test_path, faces=smooth_faces(40, 3), clips=clips, crops_per_clip=10)
    generated = {"real": faces, "identity": identity_faces(test_path),
                 "lipgan-full": noisy(faces, 6, seed=1), "l1wgan_gp-full": noisy(faces, 12, 2)}
    (folder / "generated").mkdir()
    for name, images in generated.items():
        write_generated(folder / "generated" / f"{name}.h5", images, model=name.split("-")[0])
    for kind, strength in (("blur", 1), ("blur", 3), ("desync", 2), ("noise", 10)):
        defects.make_defect_set(test_path, kind, strength, folder / "generated" /
                                f"{defects.system_name(kind, strength)}.h5")
    paths = sorted((folder / "generated").glob("*.h5"))
    for path in paths:
        score_all(folder, test_path, path, OPTIONS)
    summaries = [folder / "metrics" / p.stem / "summary.json" for p in paths]
    return folder, test_path, paths, summaries


def test_sensitivity_study_writes_its_table_and_figure_from_defect_summaries(scored_systems):
    folder, _, _, summaries = scored_systems
    table = sensitivity.write_sensitivity(summaries, folder / "tables", folder / "s.png")
    table = table.set_index("column")
    assert set(table.columns) == {"blur", "desync", "noise"}
    assert table.loc["ssim", "blur"] == pytest.approx(1.0)  # blur 3 is SSIM's largest reaction
    assert (folder / "s.png").stat().st_size > 0
    assert "| column |" in (folder / "tables" / "sensitivity.md").read_text()


def test_agreement_writes_tables_paragraph_heat_map_and_strip(scored_systems):
    folder, test_path, paths, summaries = scored_systems
    out = agreement.write_agreement(summaries, folder / "tables", heat_map_png=folder / "h.png",
                                    strip_png=folder / "strip.png", test_set=test_path,
                                    generated_paths=paths, progress_png=folder / "p.png",
                                    options={"resamples": 50})
    correlations = pd.read_csv(folder / "tables" / "correlations.csv")
    assert set(correlations["run"]) == {"lipgan-full", "l1wgan_gp-full"}
    assert set(correlations["level"]) == {"frame", "clip"}
    ranking = pd.read_csv(folder / "tables" / "ranking.csv")
    assert ranking["systems"].max() == len(paths) - 1  # the real faces have no finite PSNR
    assert out["pair"] == ("ssim", "psnr")
    assert "Kendall tau" in (folder / "tables" / "agreement.md").read_text()
    assert (folder / "strip.png").stat().st_size > 0 and (folder / "h.png").stat().st_size > 0


def test_progress_follows_each_metric_of_a_run_over_its_snapshots(tmp_path):
    from lipsync.analysis import progress

    def summary(run, samples, ssim):
        return {"run": run, "trained_samples": samples, "metric_order": ["ssim"],
                "metrics": {"ssim": {"columns": {"ssim": {
                    "value": ssim, "ci_low": ssim - 0.01, "ci_high": ssim + 0.01,
                    "higher_is_better": True}}}}}

    summaries = [summary("identity", 0, 0.8), summary("lipgan-full@1", 48, 0.7),
                 summary("lipgan-full", 96, 0.9), summary("defect-blur-2", 0, 0.5)]
    rows = progress.progress_figure(summaries, tmp_path / "p.png")
    assert rows[["run", "trained_samples", "value"]].values.tolist() == [
        ["lipgan-full", 48, 0.7], ["lipgan-full", 96, 0.9]]
    assert (tmp_path / "p.png").stat().st_size > 0
