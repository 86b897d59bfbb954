"""Metrics over training: every metric column of each run's snapshot generators ({run}@{k}) and
final generator against the samples it had trained on, one panel per column."""

from __future__ import annotations

import os

import pandas as pd

from lipsync.report import figures, tables


def progress_rows(summaries: list[dict]) -> pd.DataFrame:
    """run, trained_samples, column, value, ci_low, ci_high for runs and their snapshots."""
    rows = []
    for summary in summaries:
        if tables.system_order(summary["run"])[0] not in (2, 3):
            continue  # baselines, defect sets and external systems did not train
        run = summary["run"].partition("@")[0]
        for metric, column, _ in tables.metric_columns(summaries, ranked_only=True):
            entry = tables.column_entry(summary, metric, column)
            rows.append({"run": run, "trained_samples": summary.get("trained_samples", 0),
                         "column": column, "value": entry.get("value"),
                         "ci_low": entry.get("ci_low"), "ci_high": entry.get("ci_high")})
    return pd.DataFrame(rows, columns=["run", "trained_samples", "column", "value", "ci_low",
                                       "ci_high"])


def progress_figure(summaries: list[dict], output_png: str | os.PathLike) -> pd.DataFrame:
    rows = progress_rows(summaries).dropna(subset=["value"])
    columns = list(dict.fromkeys(rows["column"])) or ["(no trained run)"]
    figure, axes = figures.panels(len(columns), 4, 3.2, per_row=4)
    arrows = {c: "↑" if e.get("higher_is_better") else "↓"
              for _, c, e in tables.metric_columns(summaries, ranked_only=True)}
    for axis, column in zip(axes, columns, strict=False):
        for run, line in rows[rows["column"] == column].groupby("run"):
            line = line.sort_values("trained_samples")
            axis.plot(line["trained_samples"], line["value"], marker="o", label=run)
            if line["ci_low"].notna().all():
                axis.fill_between(line["trained_samples"], line["ci_low"].astype(float),
                                  line["ci_high"].astype(float), alpha=0.15)
        axis.set_title(f"{column} {arrows.get(column, '')}", fontsize=9)
        axis.set_xlabel("training samples")
        axis.grid(alpha=0.3)
    if len(rows):
        axes[0].legend(fontsize=7)
    figure.tight_layout()
    figures.save(figure, output_png)
    return rows
