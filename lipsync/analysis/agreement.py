"""Agreement between metrics: per-frame and per-clip rank correlations within each trained run, and
ranking agreement across systems (runs, baselines, defect sets), with a generated paragraph and an
image strip of the frames where the least-agreeing pair of frame metrics disagree most.

All values are oriented so that higher is better before ranking, so agreement is a positive
correlation whatever each metric's direction.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from lipsync.core.io import write_text  # noqa: E402
from lipsync.core.logs import get_logger  # noqa: E402
from lipsync.core.options import Option, defaults  # noqa: E402
from lipsync.metrics.testset import GeneratedSet, TestSet  # noqa: E402
from lipsync.report import figures, tables  # noqa: E402

log = get_logger(__name__)

# Config section `analysis.agreement`.
OPTIONS = {
    "resamples": Option(1000, int, "Bootstrap resamples of the systems for Kendall's tau "
                        "intervals.", minimum=0),
    "seed": Option(0, int, "Seeds the resampling."),
    "strip_frames": Option(6, int, "Frames shown where two metrics disagree most.", minimum=1),
}
DEFAULTS = defaults(OPTIONS)


def _directions(summaries: list[dict]) -> dict[str, bool]:
    return {column: bool(entry.get("higher_is_better"))
            for _, column, entry in tables.metric_columns(summaries, ranked_only=True)}


def oriented(frame: pd.DataFrame, directions: dict[str, bool]) -> pd.DataFrame:
    """Metric columns flipped where lower is better; infinite PSNR kept (it ranks first)."""
    columns = [c for c in frame.columns if c in directions]
    out = frame[columns].astype(np.float64).copy()
    for column in columns:
        if not directions[column]:
            out[column] = -out[column]
    return out


def spearman_matrix(values: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Spearman correlations (pairwise complete observations)."""
    return values.replace([np.inf, -np.inf], [1e300, -1e300]).corr(method="spearman")


def within_run_correlations(run: str, scores: pd.DataFrame, clips: pd.DataFrame,
                            directions: dict[str, bool]) -> pd.DataFrame:
    """Long table run, level (frame | clip), a, b, spearman, n."""
    frame_values = oriented(scores, directions)
    clip_means = scores.groupby(["speaker", "clip"], sort=False)[list(frame_values.columns)].agg(
        lambda v: v[np.isfinite(v)].mean()).reset_index()
    clip_values = clips.merge(clip_means, on=["speaker", "clip"], how="left")
    rows = []
    for level, values in (("frame", frame_values), ("clip", oriented(clip_values, directions))):
        values = values.loc[:, values.notna().sum() >= 3]
        matrix = spearman_matrix(values)
        for a, b in itertools.combinations(matrix.columns, 2):
            pairs = values[[a, b]].dropna()
            rows.append({"run": run, "level": level, "a": a, "b": b,
                         "spearman": float(matrix.loc[a, b]), "n": len(pairs)})
    return pd.DataFrame(rows, columns=["run", "level", "a", "b", "spearman", "n"])


def ranking_agreement(summaries: list[dict], options: dict | None = None) -> pd.DataFrame:
    """Kendall's tau between each pair of metric columns' rankings of the systems, with a
    bootstrap interval from resampling systems."""
    s = {**DEFAULTS, **(options or {})}
    directions = _directions(summaries)
    values = pd.DataFrame([{column: tables.column_entry(summary, metric, column).get("value")
                            for metric, column, _ in tables.metric_columns(summaries, ranked_only=True)}
                           for summary in summaries], index=[x["run"] for x in summaries])
    values = oriented(values.astype(np.float64), directions)
    rng = np.random.default_rng([s["seed"], 0x7A0])
    rows = []
    for a, b in itertools.combinations(values.columns, 2):
        pair = values[[a, b]].replace([np.inf, -np.inf], [1e300, -1e300]).dropna()
        if len(pair) < 3:
            continue
        tau = stats.kendalltau(pair[a], pair[b]).statistic
        draws = []
        for _ in range(s["resamples"]):
            pick = pair.iloc[rng.integers(0, len(pair), len(pair))]
            if pick[a].nunique() > 1 and pick[b].nunique() > 1:
                draws.append(stats.kendalltau(pick[a], pick[b]).statistic)
        low, high = (np.quantile(draws, [0.025, 0.975]) if draws else (np.nan, np.nan))
        rows.append({"a": a, "b": b, "kendall_tau": float(tau), "ci_low": float(low),
                     "ci_high": float(high), "systems": len(pair)})
    return pd.DataFrame(rows, columns=["a", "b", "kendall_tau", "ci_low", "ci_high", "systems"])


def least_agreeing(correlations: pd.DataFrame) -> tuple[str, str] | None:
    """The pair of frame metrics with the lowest mean per-frame rank correlation over runs;
    a pixel metric against LMD when both are scored (the study's question)."""
    frame = correlations[correlations["level"] == "frame"]
    if frame.empty:
        return None
    means = frame.groupby(["a", "b"])["spearman"].mean()
    for pixel in ("ssim", "psnr"):
        for pair in ((pixel, "lmd"), ("lmd", pixel)):
            if pair in means.index:
                return pair
    a, b = means.idxmin()
    return a, b


def paragraph(correlations: pd.DataFrame, ranking: pd.DataFrame) -> str:
    """Which metrics agree and which do not, in numbers."""
    lines = []
    frame = correlations[correlations["level"] == "frame"]
    if not frame.empty:
        means = frame.groupby(["a", "b"])["spearman"].mean().sort_values()
        (a, b), low = means.index[0], means.iloc[0]
        (c, d), high = means.index[-1], means.iloc[-1]
        lines.append(f"Per frame, within the trained runs, {c} and {d} agree most (mean Spearman "
                     f"{high:.2f}); {a} and {b} least ({low:.2f}).")
        disagreeing = [f"{x}/{y} ({v:.2f})" for (x, y), v in means.items() if v < 0.3]
        if disagreeing:
            lines.append("Pairs that rank frames nearly independently (Spearman < 0.3): "
                         + ", ".join(disagreeing) + ".")
    if not ranking.empty:
        ordered = ranking.sort_values("kendall_tau")
        worst, best = ordered.iloc[0], ordered.iloc[-1]
        lines.append(
            f"Across {int(best['systems'])} systems, {best['a']} and {best['b']} rank them most "
            f"alike (Kendall tau {best['kendall_tau']:.2f} [{best['ci_low']:.2f}, "
            f"{best['ci_high']:.2f}]); {worst['a']} and {worst['b']} least "
            f"({worst['kendall_tau']:.2f} [{worst['ci_low']:.2f}, {worst['ci_high']:.2f}]).")
    return " ".join(lines) or "Too few metrics or systems to compare."


def heat_map(correlations: pd.DataFrame, output_png: str | os.PathLike) -> None:
    """One Spearman matrix per (run, level)."""
    groups = list(correlations.groupby(["run", "level"], sort=False))
    figure, axes = figures.panels(len(groups), 3.8, 3.4, per_row=4)
    for axis in axes:
        axis.set_axis_off()
    for axis, ((run, level), group) in zip(axes, groups, strict=False):
        names = list(dict.fromkeys(list(group["a"]) + list(group["b"])))
        matrix = np.eye(len(names))
        for row in group.itertuples():
            i, j = names.index(row.a), names.index(row.b)
            matrix[i, j] = matrix[j, i] = row.spearman
        axis.set_axis_on()
        image = axis.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu")
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        for i, j in itertools.product(range(len(names)), repeat=2):
            axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6)
        axis.set_title(f"{run} ({level})", fontsize=8)
    if groups:
        figure.colorbar(image, ax=axes, shrink=0.6, label="Spearman")
    figures.save(figure, output_png)


def disagreement_strip(test_set, generated, scores: pd.DataFrame, pair: tuple[str, str],
                       directions: dict[str, bool], output_png, count: int = 6) -> list[int]:
    """Real and generated faces of the frames where metrics `pair` disagree most (the largest
    difference of their oriented rank percentiles); returns the sample indices."""
    values = oriented(scores, directions)[list(pair)].replace([np.inf], [1e300])
    ranks = values.rank(pct=True)
    gap = (ranks[pair[0]] - ranks[pair[1]]).abs().fillna(-1)
    picks = gap.sort_values(ascending=False).index[:count].to_numpy()
    with TestSet(test_set) as truth, GeneratedSet(generated) as output:
        real, made = truth.ground_truth_of(picks), output.faces_of(picks)
    figure, axes = plt.subplots(2, len(picks), figsize=(1.6 * len(picks), 3.6), dpi=100,
                                squeeze=False)
    for k, sample in enumerate(picks):
        for row, image in ((0, real[k]), (1, made[k])):
            axes[row, k].imshow(image)
            axes[row, k].set_axis_off()
        axes[0, k].set_title(f"#{sample}", fontsize=7)
        axes[1, k].set_title("\n".join(f"{c} {scores.loc[sample, c]:.3g}" for c in pair),
                             fontsize=6)
    figure.suptitle(f"{Path(generated).stem}: frames where {pair[0]} and {pair[1]} disagree most "
                    "(top: real, bottom: generated)", fontsize=8)
    figure.tight_layout()
    figures.save(figure, output_png)
    return picks.tolist()


def write_agreement(summary_paths: list, output_dir: str | os.PathLike, *,
                    heat_map_png, strip_png, test_set, generated_paths: list,
                    progress_png=None, options: dict | None = None) -> dict:
    """agreement.md (tables and paragraph), correlations.csv, ranking.csv, the heat map and the
    disagreement strip (from `generated_paths`, generated/{system}.h5, of the first trained run)
    and, when `progress_png` is given, every metric against training samples (snapshots).
    Scores are read beside each summary (scores.tsv, clips.tsv)."""
    s = {**DEFAULTS, **(options or {})}
    summaries = tables.load_summaries(summary_paths)
    directions = _directions(summaries)
    folders = {Path(p).parent.name: Path(p).parent for p in summary_paths}
    trained = [x for x in summaries if tables.system_order(x["run"])[0] in (2, 3)]
    correlations = pd.concat(
        [within_run_correlations(x["run"], pd.read_csv(folders[x["run"]] / "scores.tsv",
                                                       sep="\t"),
                                 pd.read_csv(folders[x["run"]] / "clips.tsv", sep="\t"),
                                 directions) for x in trained]
        or [pd.DataFrame(columns=["run", "level", "a", "b", "spearman", "n"])],
        ignore_index=True)
    ranking = ranking_agreement(summaries, s)
    output_dir = Path(output_dir)
    write_text(output_dir / "correlations.csv",
               correlations.round(6).to_csv(index=False, lineterminator="\n"))
    write_text(output_dir / "ranking.csv", ranking.round(6).to_csv(index=False,
                                                                   lineterminator="\n"))
    text = paragraph(correlations, ranking)
    pair = least_agreeing(correlations)
    if pair and trained:
        run = trained[0]["run"]
        scores = pd.read_csv(folders[run] / "scores.tsv", sep="\t")
        generated = {Path(p).stem: p for p in generated_paths}[run]
        disagreement_strip(test_set, generated, scores, pair, directions, strip_png,
                           count=s["strip_frames"])
    else:
        _placeholder(strip_png, "no trained run with two frame metrics")
    heat_map(correlations, heat_map_png)
    if progress_png is not None:
        from lipsync.analysis.progress import progress_figure

        progress_figure(summaries, progress_png)
    shown_ranking = ranking.copy()
    for column in ("kendall_tau", "ci_low", "ci_high"):
        shown_ranking[column] = shown_ranking[column].map(lambda v: f"{v:.2f}")
    body = ["Agreement between metrics", "", text, "", "Ranking agreement across systems "
            "(Kendall's tau, 95% bootstrap interval over systems):", "",
            tables.to_markdown(shown_ranking) if len(ranking) else "(too few systems)", "",
            "Per-frame and per-clip Spearman correlations within each trained run: "
            "correlations.csv and the heat map."]
    write_text(output_dir / "agreement.md", "\n".join(body) + "\n")
    return {"paragraph": text, "pair": pair}


def _placeholder(path, message: str) -> None:
    figure = plt.figure(figsize=(4, 1), dpi=100)
    figure.text(0.5, 0.5, message, ha="center", va="center", fontsize=9)
    figures.save(figure, path)


