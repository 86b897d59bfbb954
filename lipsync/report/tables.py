"""The result tables as CSV, Markdown and LaTeX: every scored metric of every system, the paper's
comparison, and the dataset-impact comparison (GRIDSmall vs GRIDFull).

Rows come from `metrics/{system}/summary.json` files (real faces and the identity baseline first,
then runs by name, then other systems); columns from the metrics each summary lists, in their
configured order: nothing here names a metric except the paper's own published table. A value is
shown with its bootstrap interval, or as "n/a (reason)". Output is deterministic for the same
summaries, and every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import write_text
from lipsync.core.logs import get_logger
from lipsync.metrics.base import NA, shown

log = get_logger(__name__)

PAPER = "paper (Geldhauser et al. 2025)"
OURS = "this reproduction"
# Published values (Electronics 14(17):3487, 2025): test-set means, models trained on GRIDFull.
PAPER_VALUES = [
    {"run": "LipGAN", "model": "lipgan", "fid": 15.11, "ssim": 0.9348, "psnr": 26.34},
    {"run": "L1WGAN-GP", "model": "l1wgan_gp", "fid": 14.49, "ssim": 0.9296, "psnr": 25.32},
]
PAPER_COLUMNS = ("fid", "ssim", "psnr")
REAL, IDENTITY = "real", "identity"
DATASET_RUNS = [("GRIDSmall", "lipgan-small"), ("GRIDFull", "lipgan-full")]
TABLES = ("metrics", "paper", "dataset_impact")


def load_summaries(summary_paths: list[str | os.PathLike]) -> list[dict]:
    """Summaries sorted: real, identity, runs, then the other systems; a name twice is an error."""
    summaries = {}
    for path in summary_paths:
        try:
            summary = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(path, "summary not found") from None
        except json.JSONDecodeError as error:
            raise InputError(path, f"not a JSON summary ({error})") from None
        for key in ("run", "metrics"):
            if key not in summary:
                raise InputError(path, f"summary has no {key!r} entry (made by an older "
                                       "lipsync? rerun `lipsync score`)")
        if summary["run"] in summaries:
            raise LipsyncError(f"run {summary['run']!r} has two summaries (second: {path})")
        summaries[summary["run"]] = summary
    return [summaries[run] for run in sorted(summaries, key=system_order)]


def system_order(name: str) -> tuple:
    """real, identity, trained runs, snapshots of runs, then defect sets and external systems."""
    rank = {REAL: 0, IDENTITY: 1}.get(name)
    if rank is None:
        rank = 4 if name.startswith(("defect-", "external-")) else 3 if "@" in name else 2
    return rank, name


def metric_columns(summaries: list[dict], *, ranked_only: bool = False
                   ) -> list[tuple[str, str, dict]]:
    """(metric, column, description entry) in the configured order, over all summaries;
    `ranked_only` leaves out columns that describe another (KID's spread, the AV offset)."""
    seen: dict[tuple[str, str], dict] = {}
    for summary in summaries:
        order = summary.get("metric_order") or sorted(summary["metrics"])
        for metric in order:
            for column, entry in summary["metrics"].get(metric, {}).get("columns", {}).items():
                seen.setdefault((metric, column), entry)
    return [(metric, column, entry) for (metric, column), entry in seen.items()
            if not ranked_only or entry.get("ranked", True)]


def column_entry(summary: dict, metric: str, column: str) -> dict:
    found = summary["metrics"].get(metric)
    if found is None:
        return {"value": None, "reason": "not scored for this system"}
    return found["columns"].get(column, {"value": None, "reason": "column missing"})


def _decimals(entry: dict) -> int:
    return int(entry.get("decimals", 4))


def _notes(summary: dict) -> str:
    notes = list(summary.get("labels", []))
    if summary["run"] == IDENTITY:
        notes.insert(0, "baseline: reference frame copied")
        feature_metrics = [m for m in ("fid", "kid") if m in summary["metrics"]]
        if feature_metrics:
            # The copies are real test frames: near 0 by construction, which says what FID
            # cannot see (a copied real frame is a perfect sample), not that the copy is good.
            notes.insert(1, f"{'/'.join(feature_metrics)} near 0: the copies are real frames, "
                            "which FID cannot tell from the real faces")
    if summary["run"] == REAL:
        notes.insert(0, "upper bound: the real faces")
    for name, metric in sorted(summary["metrics"].items()):
        if metric.get("extra", {}).get("fewer_images_than_dims"):
            notes.append(f"{name}: fewer images than Inception dims, biased")
        for reason, count in sorted(metric.get("missing", {}).items()):
            notes.append(f"{name}: {count} missing ({reason})")
    return "; ".join(notes)


def metrics_table(summaries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, display): one row per system; per column value, interval, median, min, max."""
    columns = metric_columns(summaries)
    rows, shown_rows = [], []
    for s in summaries:
        row = {"run": s["run"], "model": s.get("model", ""), "n": s.get("n_samples")}
        display = dict(row)
        for metric, column, _ in columns:
            entry = column_entry(s, metric, column)
            row[column] = entry.get("value")
            row[f"{column}_ci_low"] = entry.get("ci_low")
            row[f"{column}_ci_high"] = entry.get("ci_high")
            for stat in ("median", "min", "max"):
                if stat in entry:
                    row[f"{column}_{stat}"] = entry.get(stat)
            display[column] = shown(entry)
        row["notes"] = display["notes"] = _notes(s)
        rows.append(row)
        shown_rows.append(display)
    return _counts_as_integers(pd.DataFrame(rows)), pd.DataFrame(shown_rows)


def paper_table(summaries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's table beside ours: FID, SSIM mean and PSNR mean of the runs trained on
    GRIDFull (the paper's setting), the baselines and external systems, and the published values
    in their own block."""
    ours = [s for s in summaries if s["run"] in (REAL, IDENTITY) or s["run"].endswith("-full")
            or s["run"].startswith("external-")]
    rows, shown_rows = [], []
    for s in ours:
        row = {"source": OURS, "run": s["run"], "model": s.get("model", "")}
        display = dict(row)
        for column in PAPER_COLUMNS:
            entry = column_entry(s, column, column)
            row[column] = entry.get("value")
            display[column] = shown(entry)
        row["notes"] = display["notes"] = _notes(s)
        rows.append(row)
        shown_rows.append(display)
    for p in PAPER_VALUES:
        row = {"source": PAPER, "run": p["run"], "model": p["model"],
               **{c: p[c] for c in PAPER_COLUMNS}, "notes": "published means"}
        rows.append(row)
        shown_rows.append({**row, **{c: f"{p[c]:g}" for c in PAPER_COLUMNS}})
    return pd.DataFrame(rows), pd.DataFrame(shown_rows)


def dataset_impact_table(summaries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LipGAN on GRIDSmall vs GRIDFull for every metric column, and their difference."""
    by_run = {s["run"]: s for s in summaries}
    columns = metric_columns(summaries)
    rows, shown_rows = [], []
    for training_set, run in DATASET_RUNS:
        s = by_run.get(run)
        row = {"training_set": training_set, "run": run}
        display = dict(row)
        for metric, column, _ in columns:
            entry = column_entry(s, metric, column) if s else {"value": None}
            row[column] = entry.get("value")
            display[column] = shown(entry) if s else NA
        row["status"] = display["status"] = (_notes(s) or "ok") if s else \
            f"missing: no summary for run {run}"
        rows.append(row)
        shown_rows.append(display)
    difference = {"training_set": "GRIDFull - GRIDSmall", "run": ""}
    display = dict(difference)
    for _, column, entry in columns:
        small, full = rows[0][column], rows[1][column]
        value = full - small if small is not None and full is not None else None
        difference[column] = value
        display[column] = NA if value is None else f"{value:+.{_decimals(entry)}f}"
    difference["status"] = display["status"] = (
        "difference; better with more data where it moves the way the column's arrow points")
    rows.append(difference)
    shown_rows.append(display)
    return pd.DataFrame(rows), pd.DataFrame(shown_rows)


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _counts_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    # Missing counts would otherwise turn the column into floats ("12.0") in the CSV.
    if "n" in frame.columns:
        frame["n"] = frame["n"].astype("Int64")
    return frame


def to_csv(frame: pd.DataFrame) -> str:
    # Six decimals: beyond that the digits are floating-point noise and would make reruns differ.
    return frame.round(6).to_csv(index=False, lineterminator="\n")


def _header(column: str, arrows: dict[str, str]) -> str:
    return f"{column} {arrows[column]}" if column in arrows else column


def to_markdown(display: pd.DataFrame, arrows: dict[str, str] | None = None) -> str:
    arrows = arrows or {}
    text_columns = {"source", "run", "model", "notes", "status", "training_set"}
    header = "| " + " | ".join(_header(c, arrows) for c in display.columns) + " |"
    rule = "|" + "|".join("---" if c in text_columns else "---:" for c in display.columns) + "|"
    body = ["| " + " | ".join(_format(None if pd.isna(v) else v) if not isinstance(v, str)
                              else v.replace("|", "/") for v in row) + " |"
            for row in display.itertuples(index=False)]
    return "\n".join([header, rule] + body) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                          ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


def to_latex(display: pd.DataFrame, caption: str) -> str:
    """A booktabs tabular; rows of each `source` form a block under its own heading."""
    columns = [c for c in display.columns if c != "source"]
    align = "".join("l" if c in ("run", "model", "notes", "status", "training_set") else "r"
                    for c in columns)
    lines = [f"% {caption}", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(_latex_escape(c) for c in columns) + " \\\\", "\\midrule"]
    current = None
    for _, row in display.iterrows():
        source = row.get("source")
        if "source" in display.columns and source != current:
            if current is not None:
                lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{len(columns)}}}{{l}}{{\\textit{{"
                         f"{_latex_escape(str(source))}}}}} \\\\")
            current = source
        values = [_format(None if pd.isna(row[c]) else row[c]) if not isinstance(row[c], str)
                  else row[c] for c in columns]
        lines.append(" & ".join(_latex_escape(v) for v in values) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def identity_comparison(summaries: list[dict]) -> list[str]:
    """One line per trained system: the ranked metrics on which it beats the identity copy (the
    reference frame returned unchanged) and those on which it does not, with both values."""
    identity = next((s for s in summaries if s["run"] == IDENTITY), None)
    if identity is None:
        return []
    lines = []
    for summary in summaries:
        if not summary.get("trained_samples"):  # real, identity, defects, external videos
            continue
        above, below = [], []
        for metric, column, entry in metric_columns(summaries, ranked_only=True):
            ours = column_entry(summary, metric, column).get("value")
            base = column_entry(identity, metric, column).get("value")
            if ours is None or base is None or "higher_is_better" not in entry:
                continue
            decimals = _decimals(entry)
            text = f"{column} {ours:.{decimals}f} vs {base:.{decimals}f}"
            better = ours > base if entry["higher_is_better"] else ours < base
            (above if better else below).append(text)
        head = (f"**{summary['run']}** ({summary.get('model', '?')}, "
                f"{summary['trained_samples']:,} training samples)")
        lines.append(f"{head}: beats the identity copy on {', '.join(above) or 'no metric'}; "
                     f"not on {', '.join(below) or 'any metric'}")
    return lines


def protocol_notes(summaries: list[dict]) -> list[str]:
    """One line per metric: what it compares and how, from the first summary that scored it."""
    notes, done = [], set()
    for summary in summaries:
        for name in summary.get("metric_order") or sorted(summary["metrics"]):
            metric = summary["metrics"].get(name, {})
            if name in done or not metric.get("protocol"):
                continue
            done.add(name)
            record = {k: v for k, v in metric["protocol"].items() if k != "bootstrap"}
            notes.append(f"**{name}** ({metric.get('description', '')}): " + "; ".join(
                f"{k}: {v}" for k, v in sorted(record.items())))
    if summaries:
        boot = summaries[0].get("bootstrap", {})
        if boot:
            notes.append(f"Intervals: {boot.get('confidence', 0.95):.0%} {boot.get('interval')} "
                         f"bootstrap over clips ({boot.get('resamples')} resamples; set metrics "
                         f"{boot.get('set_resamples')}).")
    labels = sorted({label for s in summaries for label in s.get("labels", [])})
    notes += [f"**{label}** (systems: " + ", ".join(s["run"] for s in summaries
                                                  if label in s.get("labels", [])) + ")"
              for label in labels]
    notes += [f"Warning: {w}" for w in sorted({w for s in summaries for w in s.get("warnings", [])})]
    notes.append(f"Rows under '{PAPER}' are the published values, not results of this pipeline.")
    return notes


def write_tables(summary_paths: list[str | os.PathLike], output_dir: str | os.PathLike, *,
                 options: dict | None = None) -> dict[str, pd.DataFrame]:
    """Write metrics, paper and dataset_impact as .csv/.md/.tex, and summary.md, to output_dir.

    `options` (the report section) is accepted for the CLI contract; the tables need none of it.
    """
    summaries = load_summaries(summary_paths)
    output_dir = Path(output_dir)
    arrows = {column: "↑" if entry.get("higher_is_better") else "↓"
              for _, column, entry in metric_columns(summaries)}
    built = {
        "metrics": (*metrics_table(summaries),
                    "Every metric per system: value [95% bootstrap interval over clips]"),
        "paper": (*paper_table(summaries), "The paper's metrics: this reproduction beside the "
                                           "published values (GRIDFull runs)"),
        "dataset_impact": (*dataset_impact_table(summaries),
                           "LipGAN trained on GRIDSmall vs GRIDFull"),
    }
    for name, (numbers, display, caption) in built.items():
        write_text(output_dir / f"{name}.csv", to_csv(numbers))
        write_text(output_dir / f"{name}.md", f"{caption}\n\n{to_markdown(display, arrows)}")
        write_text(output_dir / f"{name}.tex", to_latex(display, caption))
    missing = [run for _, run in DATASET_RUNS if run not in {s["run"] for s in summaries}]
    if missing:
        log.warning("dataset impact table: no summary for %s", ", ".join(missing))
    parts = ["# Results", ""]
    for name, (_, display, caption) in built.items():
        parts += [f"## {name.replace('_', ' ').capitalize()}", "", caption, "",
                  to_markdown(display, arrows)]
    versus_identity = identity_comparison(summaries)
    if versus_identity:
        parts += ["## Against the identity copy", "",
                  "A generator below the identity copy on SSIM and PSNR has not yet learned to "
                  "redraw the face better than copying its reference frame: it needs more "
                  "training (training.options.total_samples; docs/learning.md measures how "
                  "much).", ""] + [f"- {line}" for line in versus_identity] + [""]
    parts += ["## Protocols and notes", ""] + [f"- {note}" for note in protocol_notes(summaries)]
    write_text(output_dir / "summary.md", "\n".join(parts) + "\n")
    return {name: numbers for name, (numbers, _, _) in built.items()}
