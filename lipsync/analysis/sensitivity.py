"""Which metric notices which defect: every metric column of every defect set, normalised so all
metrics share one axis, as a table and a figure.

Normalisation per metric column: the change from the real faces' value, signed so that worse is
positive, divided by the largest such change over all defect sets (1 = the strongest reaction this
metric shows to any defect, 0 = no change from the real faces). Where the real value is not finite
(PSNR of identical frames is infinite) the best value over the defect sets stands in for it.
"""

from __future__ import annotations

import os
import re

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lipsync.core.errors import LipsyncError  # noqa: E402
from lipsync.core.io import write_text  # noqa: E402
from lipsync.core.logs import get_logger  # noqa: E402
from lipsync.report import figures, tables  # noqa: E402

log = get_logger(__name__)

_DEFECT = re.compile(r"^defect-(?P<kind>[a-z_]+)-(?P<strength>[0-9.eE+-]+)$")


def defect_rows(summaries: list[dict]) -> pd.DataFrame:
    """One row per (defect set, metric column): kind, strength, value, direction."""
    columns = tables.metric_columns(summaries, ranked_only=True)
    rows = []
    for summary in summaries:
        match = _DEFECT.match(summary["run"])
        if not match:
            continue
        for metric, column, entry in columns:
            value = tables.column_entry(summary, metric, column).get("value")
            rows.append({"kind": match["kind"], "strength": float(match["strength"]),
                         "metric": metric, "column": column,
                         "higher_is_better": bool(entry.get("higher_is_better")),
                         "value": np.nan if value is None else float(value)})
    return pd.DataFrame(rows, columns=["kind", "strength", "metric", "column",
                                       "higher_is_better", "value"])


def normalise(rows: pd.DataFrame, real: dict[str, float]) -> pd.DataFrame:
    """Add `baseline`, `worse` (signed change from the baseline) and `normalised` columns."""
    out = []
    for column, group in rows.groupby("column", sort=False):
        group = group.copy()
        sign = -1.0 if group["higher_is_better"].iloc[0] else 1.0
        finite = group["value"][np.isfinite(group["value"])]
        baseline = real.get(column, np.nan)
        if not np.isfinite(baseline):
            baseline = (finite.max() if sign < 0 else finite.min()) if len(finite) else np.nan
        group["baseline"] = baseline
        group["worse"] = sign * (group["value"] - baseline)
        spread = np.nanmax(np.abs(group["worse"].to_numpy())) if len(finite) else np.nan
        group["normalised"] = group["worse"] / spread if spread and np.isfinite(spread) else 0.0
        out.append(group)
    return pd.concat(out, ignore_index=True) if out else rows.assign(
        baseline=[], worse=[], normalised=[])


def sensitivity_table(normalised: pd.DataFrame) -> pd.DataFrame:
    """Metric column x defect kind: the normalised change at the kind's strongest setting (for
    jpeg the lowest quality), the answer to "which metric sees which defect"."""
    strongest = []
    for kind, group in normalised.groupby("kind", sort=False):
        pick = group["strength"].min() if kind == "jpeg" else group["strength"].max()
        strongest.append(group[group["strength"] == pick])
    if not strongest:
        return pd.DataFrame()
    frame = pd.concat(strongest)
    return frame.pivot_table(index="column", columns="kind", values="normalised",
                             sort=False).reset_index()


def sensitivity_figure(normalised: pd.DataFrame, output_png: str | os.PathLike) -> None:
    kinds = list(dict.fromkeys(normalised["kind"]))
    if not kinds:
        raise LipsyncError("no defect sets among the summaries: nothing to plot")
    figure, axes = figures.panels(len(kinds), 4.6, 3.6)
    for axis, kind in zip(axes, kinds, strict=False):
        group = normalised[normalised["kind"] == kind]
        for column, line in group.groupby("column", sort=False):
            line = line.sort_values("strength")
            axis.plot(line["strength"], line["normalised"], marker="o", label=column)
        axis.set_title(f"{kind}", fontsize=10)
        axis.set_xlabel("strength" + (" (JPEG quality)" if kind == "jpeg" else ""))
        if kind == "jpeg":
            axis.invert_xaxis()
        axis.set_ylabel("normalised change (worse = up)")
        axis.set_ylim(-0.1, 1.1)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figures.save(figure, output_png)


def write_sensitivity(summary_paths: list[str | os.PathLike], output_dir: str | os.PathLike,
                      figure_png: str | os.PathLike) -> pd.DataFrame:
    """sensitivity.csv (every defect set and column), sensitivity.md (the strongest setting of
    each kind per column) and the figure."""
    summaries = tables.load_summaries(summary_paths)
    real = next((s for s in summaries if s["run"] == tables.REAL), None)
    real_values = {}
    if real is not None:
        for metric, column, _ in tables.metric_columns([real], ranked_only=True):
            value = tables.column_entry(real, metric, column).get("value")
            real_values[column] = np.nan if value is None else float(value)
    normalised = normalise(defect_rows(summaries), real_values)
    table = sensitivity_table(normalised)
    write_text(os.path.join(output_dir, "sensitivity.csv"),
               normalised.round(6).to_csv(index=False, lineterminator="\n"))
    display = table.copy()
    for column in display.columns[1:]:
        display[column] = display[column].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    caption = ("Sensitivity: normalised change of each metric at each defect's strongest setting "
               "(1 = the metric's largest reaction to any defect, 0 = as the real faces)")
    write_text(os.path.join(output_dir, "sensitivity.md"),
               f"{caption}\n\n{tables.to_markdown(display)}\n{blind_spots(table)}\n")
    sensitivity_figure(normalised, figure_png)
    return table


def blind_spots(table: pd.DataFrame, threshold: float = 0.1) -> str:
    """A sentence per defect kind naming the metrics that barely move under it."""
    if table.empty:
        return ""
    lines = []
    for kind in table.columns[1:]:
        blind = table.loc[table[kind].abs() < threshold, "column"].tolist()
        seeing = table.loc[table[kind] >= 0.5, "column"].tolist()
        lines.append(f"- {kind}: barely moved (< {threshold:.0%} of their largest reaction): "
                     f"{', '.join(blind) or 'none'}; clearly moved (>= 50%): "
                     f"{', '.join(seeing) or 'none'}.")
    return "\n".join(lines)
