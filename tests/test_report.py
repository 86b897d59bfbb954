"""Tables and figures from scored runs (scored here with a seeded random Inception): what they show
follows the metrics the summaries carry, so a new metric needs no change here."""

from __future__ import annotations

import json

import matplotlib.image
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

from lipsync.core.errors import InputError
from lipsync.metrics import fid, registry
from lipsync.metrics.base import Column, Metric, Result
from lipsync.report import figures, tables

RUNS = {"lipgan-small": 8.0, "l1wgan_gp-full": 20.0}  # run -> noise added to the ground truth


@pytest.fixture(scope="module")
def scored_runs(tmp_path_factory):
    """identity plus two noisy runs, scored: (folder, generated paths, scores, summaries)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("report")
    test_path = folder / "test.h5"
    faces = write_test_set(test_path)
    outputs = {"identity": identity_faces(test_path)}
    outputs.update({run: noisy(faces, sigma, seed=i) for i, (run, sigma) in enumerate(RUNS.items())})
    generated, scores, summaries = [], [], []
    for run, images in outputs.items():
        path = folder / "generated" / f"{run}.h5"
        path.parent.mkdir(exist_ok=True)
        write_generated(path, images, model=run.split("-")[0])
        score_all(folder, test_path, path, EVALUATE_OPTIONS)
        generated.append(path)
        scores.append(folder / "metrics" / run / "scores.tsv")
        summaries.append(folder / "metrics" / run / "summary.json")
    return folder, generated, scores, summaries


def test_metrics_table_has_a_row_per_system_and_a_column_per_metric_with_intervals(
        scored_runs, tmp_path):
    _, _, scores, summaries = scored_runs
    tables.write_tables(summaries, tmp_path, options={})
    frame = pd.read_csv(tmp_path / "metrics.csv").set_index("run")
    assert frame.index.tolist() == ["identity", "l1wgan_gp-full", "lipgan-small"]
    per_frame = pd.read_csv(scores[1], sep="\t")  # lipgan-small
    assert frame.loc["lipgan-small", "ssim"] == pytest.approx(per_frame["ssim"].mean(), abs=1e-6)
    assert frame.loc["lipgan-small", "ssim_median"] == pytest.approx(per_frame["ssim"].median(),
                                                                     abs=1e-6)
    assert frame.loc["lipgan-small", "ssim_ci_low"] <= frame.loc["lipgan-small", "ssim"]
    for column in ("fid", "kid", "kid_std", "psnr"):
        assert column in frame.columns
    # More noise, lower SSIM: the numbers are the runs', not placeholders.
    assert frame.loc["lipgan-small", "ssim"] > frame.loc["l1wgan_gp-full", "ssim"]
    assert fid.RANDOM_WEIGHTS_LABEL in frame.loc["lipgan-small", "notes"]
    markdown = (tmp_path / "metrics.md").read_text()
    assert "| run | model | n | fid ↓ | kid ↓ | kid_std ↓ | ssim ↑ | psnr ↑ | notes |" in markdown
    ssim = json.loads(summaries[1].read_text())["metrics"]["ssim"]["columns"]["ssim"]
    assert f"{ssim['value']:.4f} [{ssim['ci_low']:.4f}, {ssim['ci_high']:.4f}]" in markdown


def test_paper_table_puts_the_published_values_beside_the_full_runs(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    tables.write_tables(summaries, tmp_path, options={})
    frame = pd.read_csv(tmp_path / "paper.csv")
    assert frame["run"].tolist() == ["identity", "l1wgan_gp-full", "LipGAN", "L1WGAN-GP"]
    paper = frame[frame["source"] == tables.PAPER].set_index("run")
    assert paper.loc["LipGAN", ["fid", "ssim", "psnr"]].tolist() == [15.11, 0.9348, 26.34]
    latex = (tmp_path / "paper.tex").read_text()
    assert "\\textit{paper (Geldhauser et al. 2025)}" in latex and "l1wgan\\_gp-full" in latex


def test_dataset_impact_table_says_when_a_run_is_missing(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    tables.write_tables(summaries, tmp_path, options={})
    frame = pd.read_csv(tmp_path / "dataset_impact.csv", keep_default_na=False)
    assert frame["training_set"].tolist() == ["GRIDSmall", "GRIDFull", "GRIDFull - GRIDSmall"]
    assert frame["status"][1] == "missing: no summary for run lipgan-full"
    assert frame["fid"][2] == ""
    assert "missing: no summary for run lipgan-full" in (tmp_path / "summary.md").read_text()


def test_dataset_impact_table_gives_the_difference_full_minus_small(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    small = json.loads(summaries[1].read_text())
    full = json.loads(json.dumps(small))
    full["run"] = "lipgan-full"
    full["metrics"]["fid"]["columns"]["fid"]["value"] = 3.5
    full["metrics"]["ssim"]["columns"]["ssim"]["value"] = 0.99
    full_path = tmp_path / "full.json"
    full_path.write_text(json.dumps(full))
    tables.write_tables([*summaries, full_path], tmp_path / "t", options={})
    frame = pd.read_csv(tmp_path / "t" / "dataset_impact.csv").set_index("training_set")
    fid_small = small["metrics"]["fid"]["columns"]["fid"]["value"]
    assert frame.loc["GRIDFull - GRIDSmall", "fid"] == pytest.approx(3.5 - fid_small, abs=1e-6)
    assert frame.loc["GRIDFull - GRIDSmall", "ssim"] == pytest.approx(
        0.99 - small["metrics"]["ssim"]["columns"]["ssim"]["value"], abs=1e-6)


def test_tables_are_deterministic_and_summary_md_combines_them(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    tables.write_tables(summaries, tmp_path / "a", options={})
    tables.write_tables(list(reversed(summaries)), tmp_path / "b", options={})
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(f"{t}.{e}" for t in tables.TABLES
                           for e in ("csv", "md", "tex")) + ["summary.md"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    summary = (tmp_path / "a" / "summary.md").read_text()
    for heading in ("## Metrics", "## Paper", "## Dataset impact", "## Protocols and notes"):
        assert heading in summary
    assert fid.RANDOM_WEIGHTS_LABEL in summary and "**kid**" in summary


def test_a_run_with_two_summaries_is_refused(scored_runs, tmp_path):
    _, _, _, summaries = scored_runs
    with pytest.raises(Exception, match="two summaries"):
        tables.write_tables([summaries[0], summaries[0]], tmp_path, options={})


class _Sharpness(Metric):
    """Toy metric: mean absolute horizontal gradient of the generated face, per frame."""

    @classmethod
    def protocol(cls, options):
        return {"what": "mean |x[:, 1:] - x[:, :-1]| of the generated frame"}

    def __init__(self, options, context):
        super().__init__(options, context)
        self.values = []

    def update(self, batch):
        faces = batch.generated.astype(np.float64)
        self.values.append(np.abs(np.diff(faces, axis=2)).mean(axis=(1, 2, 3)))

    def result(self):
        return Result({"sharpness": np.concatenate(self.values)})


def test_a_toy_metric_module_appears_in_scores_tables_and_figures(scored_runs, tmp_path):
    folder, generated, _, _ = scored_runs
    registry.register_metric("sharpness", level="frame", columns=(
        Column("sharpness", "gradient energy", higher_is_better=True),))(_Sharpness)
    try:
        options = {**EVALUATE_OPTIONS, "metrics": ["ssim", "sharpness"]}
        for path in generated:
            score_all(tmp_path, folder / "test.h5", path, options)
        runs = [p.stem for p in generated]
        summaries = [tmp_path / "metrics" / run / "summary.json" for run in runs]
        scores = [tmp_path / "metrics" / run / "scores.tsv" for run in runs]
        tables.write_tables(summaries, tmp_path / "tables", options={})
        assert "sharpness ↑" in (tmp_path / "tables" / "metrics.md").read_text()
        assert "**sharpness**" in (tmp_path / "tables" / "summary.md").read_text()
        figures.distributions_figure(scores, tmp_path / "d.png")
        assert matplotlib.image.imread(tmp_path / "d.png").shape[:2] == (450, 1000)  # 2 panels
    finally:
        registry.METRICS.pop("sharpness")


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
    # ssim and psnr (the frame metrics of EVALUATE_OPTIONS): two panels side by side.
    assert matplotlib.image.imread(distributions).shape[:2] == (450, 1000)


def test_figures_refuse_a_scores_file_without_metric_columns(scored_runs, tmp_path):
    folder, generated, _, _ = scored_runs
    bad = tmp_path / "run" / "scores.tsv"
    bad.parent.mkdir()
    bad.write_text("sample\tspeaker\n0\ts1\n")
    with pytest.raises(InputError, match="lacks column"):
        figures.write_figures(folder / "test.h5", generated, [bad], tmp_path / "q.png",
                              tmp_path / "d.png", options={})


def _summary(run, ssim, lmd, trained_samples=None):
    columns = {"ssim": {"ssim": {"value": ssim, "higher_is_better": True, "decimals": 3}},
               "lmd": {"lmd": {"value": lmd, "higher_is_better": False, "decimals": 2}}}
    return {"run": run, "model": run.split("-")[0], "trained_samples": trained_samples,
            "metric_order": ["ssim", "lmd"],
            "metrics": {name: {"columns": cols} for name, cols in columns.items()}}


def test_each_trained_system_is_set_against_the_identity_copy_metric_by_metric():
    summaries = [_summary("identity", 0.8, 2.0), _summary("defect-blur-2", 0.9, 1.0),
                 _summary("lipgan-small", 0.5, 1.5, trained_samples=384)]
    lines = tables.identity_comparison(summaries)
    assert lines == ["**lipgan-small** (lipgan, 384 training samples): beats the identity copy "
                     "on lmd 1.50 vs 2.00; not on ssim 0.500 vs 0.800"]
    assert tables.identity_comparison(summaries[1:]) == []  # no identity copy scored


def test_the_identity_copys_fid_is_explained_in_its_notes():
    """FID 0.00 for the identity copy is the study's point, not a result: the row says why."""
    identity = _summary("identity", 0.8, 2.0)
    identity["metrics"]["fid"] = {"columns": {"fid": {"value": 0.0, "higher_is_better": False,
                                                      "decimals": 2}}}
    _, display = tables.metrics_table([identity, _summary("lipgan-small", 0.5, 1.5, 384)])
    assert "FID cannot tell from the real faces" in display.loc[0, "notes"]
    assert "FID" not in display.loc[1, "notes"]
