"""Tables and figures from scored runs (scored here with a seeded random Inception)."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from test_evaluate import (
    EVALUATE_OPTIONS,
    identity_faces,
    noisy,
    write_generated,
    write_test_set,
)

from lipsync.errors import InputError
from lipsync.metrics import evaluate, fid
from lipsync.report import figures, tables

RUNS = {"lipgan-small": 8.0, "l1wgan_gp-full": 20.0}  # run -> noise added to the ground truth


@pytest.fixture(scope="module")
def scored_runs(tmp_path_factory):
    """identity plus two noisy runs, scored: (folder, generated paths, scores, summaries)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("report")
    test_path = folder / "test.h5"
    faces = write_test_set(test_path)
    reference = folder / "fid_reference.npz"
    fid.reference_statistics(test_path, reference, options=EVALUATE_OPTIONS["fid"])
    outputs = {"identity": identity_faces(test_path)}
    outputs.update({run: noisy(faces, sigma, seed=i) for i, (run, sigma) in enumerate(RUNS.items())})
    generated, scores, summaries = [], [], []
    for run, images in outputs.items():
        path = folder / "generated" / f"{run}.h5"
        path.parent.mkdir(exist_ok=True)
        write_generated(path, images, model=run.split("-")[0])
        metrics = folder / "metrics" / run
        evaluate.score_run(path, test_path, reference, metrics / "scores.tsv",
                           metrics / "summary.json", options=EVALUATE_OPTIONS)
        generated.append(path)
        scores.append(metrics / "scores.tsv")
        summaries.append(metrics / "summary.json")
    return folder, generated, scores, summaries


def test_fid_table_has_a_row_per_run_identity_first_and_the_papers_values(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    written = tables.write_tables(summaries, tmp_path, options={})
    frame = pd.read_csv(tmp_path / "fid.csv")
    assert frame["run"].tolist() == ["identity", "l1wgan_gp-full", "lipgan-small",
                                     "LipGAN", "L1WGAN-GP"]
    ours = json.loads(summaries[1].read_text())  # lipgan-small
    row = frame[frame["run"] == "lipgan-small"].iloc[0]
    assert row["fid"] == pytest.approx(ours["fid"]["value"], abs=1e-6)
    assert row["n"] == 12 and row["source"] == tables.OURS
    assert fid.RANDOM_WEIGHTS_LABEL in row["notes"]
    paper = frame[frame["source"] == tables.PAPER].set_index("run")["fid"]
    assert paper.to_dict() == {"LipGAN": 15.11, "L1WGAN-GP": 14.49}
    assert written["fid"].shape[0] == 5
    markdown = (tmp_path / "fid.md").read_text()
    assert "| this reproduction | lipgan-small | lipgan | " in markdown
    assert "| paper (Geldhauser et al. 2025) | LipGAN | lipgan | 15.11 |" in markdown
    latex = (tmp_path / "fid.tex").read_text()
    assert "\\textit{paper (Geldhauser et al. 2025)}" in latex and "l1wgan\\_gp-full" in latex


def test_ssim_psnr_table_has_mean_median_max_min_and_counts_infinite_psnr(scored_runs, tmp_path):
    _, _, scores, summaries = scored_runs
    tables.write_tables(summaries, tmp_path, options={})
    frame = pd.read_csv(tmp_path / "ssim_psnr.csv").set_index("run")
    per_frame = pd.read_csv(scores[1], sep="\t")  # lipgan-small
    assert frame.loc["lipgan-small", "ssim_median"] == pytest.approx(per_frame["ssim"].median(),
                                                                     abs=1e-6)
    assert frame.loc["lipgan-small", "psnr_min"] == pytest.approx(per_frame["psnr"].min(),
                                                                  abs=1e-6)
    assert frame.loc["identity", "psnr_infinite"] == 1  # sample 0 references itself
    assert frame.loc["LipGAN", "ssim_mean"] == 0.9348 and frame.loc["L1WGAN-GP", "psnr_mean"] == 25.32
    assert np.isnan(frame.loc["LipGAN", "ssim_median"])  # the paper gives means only
    # More noise, lower SSIM: the numbers are the runs', not placeholders.
    assert frame.loc["lipgan-small", "ssim_mean"] > frame.loc["l1wgan_gp-full", "ssim_mean"]


def test_dataset_impact_table_says_when_a_run_is_missing(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    tables.write_tables(summaries, tmp_path, options={})
    frame = pd.read_csv(tmp_path / "dataset_impact.csv", keep_default_na=False)
    assert frame["training_set"].tolist() == ["GRIDSmall", "GRIDFull", "GRIDFull - GRIDSmall"]
    assert frame["status"][1] == "missing: no summary for run lipgan-full"
    assert frame["status"][2] == "not computed: a run is missing"
    assert "missing: no summary for run lipgan-full" in (tmp_path / "summary.md").read_text()


def test_dataset_impact_table_gives_the_difference_full_minus_small(scored_runs, tmp_path):
    folder, _, _, summaries = scored_runs
    small = json.loads(summaries[1].read_text())
    full = {**small, "run": "lipgan-full", "fid": {**small["fid"], "value": 3.5},
            "ssim": {**small["ssim"], "mean": 0.99}}
    full_path = tmp_path / "full.json"
    full_path.write_text(json.dumps(full))
    tables.write_tables([*summaries, full_path], tmp_path / "t", options={})
    frame = pd.read_csv(tmp_path / "t" / "dataset_impact.csv").set_index("training_set")
    assert frame.loc["GRIDFull - GRIDSmall", "fid"] == pytest.approx(3.5 - small["fid"]["value"],
                                                                     abs=1e-6)
    assert frame.loc["GRIDFull - GRIDSmall", "ssim_mean"] == pytest.approx(
        0.99 - small["ssim"]["mean"], abs=1e-6)


def test_tables_are_deterministic_and_summary_md_combines_them(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    tables.write_tables(summaries, tmp_path / "a", options={})
    tables.write_tables(list(reversed(summaries)), tmp_path / "b", options={})
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(f"{t}.{e}" for t in ("fid", "ssim_psnr", "dataset_impact")
                           for e in ("csv", "md", "tex")) + ["summary.md"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    summary = (tmp_path / "a" / "summary.md").read_text()
    for heading in ("## FID", "## SSIM and PSNR", "## Dataset impact", "## Notes"):
        assert heading in summary
    assert fid.RANDOM_WEIGHTS_LABEL in summary


def test_a_run_with_two_summaries_is_refused(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    with pytest.raises(Exception, match="two summaries"):
        tables.write_tables([summaries[0], summaries[0]], tmp_path, options={})


def test_qualitative_figure_shows_ground_truth_and_each_run_pixel_true(scored_runs, tmp_path):
    folder, generated, scores, _ = scored_runs
    options = {"qualitative_samples": 4, "seed": 3}
    qualitative, distributions = tmp_path / "q.png", tmp_path / "d.png"
    figures.write_figures(folder / "test.h5", generated, scores, qualitative, distributions,
                          options=options)
    image = matplotlib.image.imread(qualitative)
    width, height = figures.qualitative_size(3 + len(generated), 4)
    assert image.shape[:2] == (height, width)
    samples = figures.choose_samples(12, 4, 3)
    assert np.array_equal(samples, figures.choose_samples(12, 4, 3)) and len(set(samples)) == 4
    # The cell of row 0 (ground truth), column 1 holds that sample's face, upscaled 1:1.
    faces = write_test_set(tmp_path / "same.h5")  # same seed: the same faces
    cell = 96 * figures.SCALE + figures.GAP
    top = figures.HEADER_PX + figures.GAP // 2
    left = figures.LABEL_PX + cell + figures.GAP // 2
    drawn = np.round(image[top:top + 192, left:left + 192, :3] * 255).astype(np.uint8)
    expected = faces[samples[1]].repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(drawn.astype(int) - expected).mean() < 1.0
    distributions_image = matplotlib.image.imread(distributions)
    assert distributions_image.shape[:2] == (450, 1000)


def test_figures_refuse_a_scores_file_without_metric_columns(scored_runs, tmp_path):
    folder, generated, _, _ = scored_runs
    bad = tmp_path / "run" / "scores.tsv"
    bad.parent.mkdir()
    bad.write_text("sample\tspeaker\n0\ts1\n")
    with pytest.raises(InputError, match="lacks column"):
        figures.write_figures(folder / "test.h5", generated, [bad], tmp_path / "q.png",
                              tmp_path / "d.png", options={})
