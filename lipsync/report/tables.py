"""The paper's tables (FID; SSIM and PSNR; dataset impact) as CSV, Markdown and LaTeX.

Rows come from `metrics/{run}/summary.json` files (identity baseline first, then runs by name); the
paper's published values sit in a separate, labelled block. Output is deterministic for the same
summaries, and every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from lipsync.errors import InputError, LipsyncError
from lipsync.io import write_text
from lipsync.logs import get_logger

log = get_logger(__name__)

PAPER = "paper (Geldhauser et al. 2025)"
OURS = "this reproduction"
# Published values (Electronics 14(17):3487, 2025): test-set means, models trained on GRIDFull.
PAPER_VALUES = [
    {"run": "LipGAN", "model": "lipgan", "fid": 15.11, "ssim_mean": 0.9348, "psnr_mean": 26.34},
    {"run": "L1WGAN-GP", "model": "l1wgan_gp", "fid": 14.49, "ssim_mean": 0.9296,
     "psnr_mean": 25.32},
]
IDENTITY = "identity"
DATASET_RUNS = [("GRIDSmall", "lipgan-small"), ("GRIDFull", "lipgan-full")]
STATS = ("mean", "median", "max", "min")
_DECIMALS = {"fid": 2, "ssim": 4, "psnr": 2}


def load_summaries(summary_paths: list[str | os.PathLike]) -> list[dict]:
    """Summaries sorted identity first, then by run name; a run named twice is an error."""
    summaries = {}
    for path in summary_paths:
        try:
            summary = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(path, "summary not found") from None
        except json.JSONDecodeError as error:
            raise InputError(path, f"not a JSON summary ({error})") from None
        for key in ("run", "fid", "ssim", "psnr"):
            if key not in summary:
                raise InputError(path, f"summary has no {key!r} entry")
        if summary["run"] in summaries:
            raise LipsyncError(f"run {summary['run']!r} has two summaries (second: {path})")
        summaries[summary["run"]] = summary
    return [summaries[run] for run in sorted(summaries, key=lambda r: (r != IDENTITY, r))]


def _notes(summary: dict) -> str:
    notes = list(summary.get("labels", []))
    if summary.get("flags", {}).get("fid_fewer_images_than_dims"):
        notes.append("fewer images than Inception dims: FID biased")
    if summary["run"] == IDENTITY:
        notes.insert(0, "baseline: reference frame copied")
    return "; ".join(notes)


def fid_table(summaries: list[dict]) -> pd.DataFrame:
    rows = [{"source": OURS, "run": s["run"], "model": s.get("model", ""),
             "fid": s["fid"]["value"], "n": s["fid"].get("n_generated"), "notes": _notes(s)}
            for s in summaries]
    rows += [{"source": PAPER, "run": p["run"], "model": p["model"], "fid": p["fid"], "n": None,
              "notes": "published value"} for p in PAPER_VALUES]
    return _counts_as_integers(pd.DataFrame(rows, columns=["source", "run", "model", "fid", "n",
                                                           "notes"]))


def ssim_psnr_table(summaries: list[dict]) -> pd.DataFrame:
    columns = (["source", "run", "model", "n"] + [f"ssim_{s}" for s in STATS]
               + [f"psnr_{s}" for s in STATS] + ["psnr_infinite", "notes"])
    rows = []
    for s in summaries:
        row = {"source": OURS, "run": s["run"], "model": s.get("model", ""),
               "n": s["ssim"].get("n"), "psnr_infinite": s["psnr"].get("n_infinite", 0),
               "notes": "baseline: reference frame copied" if s["run"] == IDENTITY else ""}
        for stat in STATS:
            row[f"ssim_{stat}"] = s["ssim"].get(stat)
            row[f"psnr_{stat}"] = s["psnr"].get(stat)
        if row["psnr_infinite"]:
            row["notes"] = "; ".join(filter(None, [
                row["notes"], f"{row['psnr_infinite']} frames identical (PSNR inf) left out "
                              "of PSNR statistics"]))
        rows.append(row)
    for p in PAPER_VALUES:
        rows.append({"source": PAPER, "run": p["run"], "model": p["model"],
                     "ssim_mean": p["ssim_mean"], "psnr_mean": p["psnr_mean"],
                     "notes": "published means only"})
    return _counts_as_integers(pd.DataFrame(rows, columns=columns))


def dataset_impact_table(summaries: list[dict]) -> pd.DataFrame:
    by_run = {s["run"]: s for s in summaries}
    columns = ["training_set", "run", "fid", "n", "ssim_mean", "psnr_mean", "status"]
    rows = []
    for training_set, run in DATASET_RUNS:
        s = by_run.get(run)
        if s is None:
            rows.append({"training_set": training_set, "run": run,
                         "status": f"missing: no summary for run {run}"})
            continue
        rows.append({"training_set": training_set, "run": run, "fid": s["fid"]["value"],
                     "n": s["fid"].get("n_generated"), "ssim_mean": s["ssim"].get("mean"),
                     "psnr_mean": s["psnr"].get("mean"), "status": _notes(s) or "ok"})
    small, full = rows
    if "fid" in small and "fid" in full:
        difference = {"training_set": "GRIDFull - GRIDSmall", "run": "",
                      "status": "difference (negative FID, positive SSIM/PSNR: more data helps)"}
        for key in ("fid", "ssim_mean", "psnr_mean"):
            both = small[key] is not None and full[key] is not None
            difference[key] = full[key] - small[key] if both else None
        rows.append(difference)
    else:
        rows.append({"training_set": "GRIDFull - GRIDSmall", "run": "",
                     "status": "not computed: a run is missing"})
    return _counts_as_integers(pd.DataFrame(rows, columns=columns))


def _format(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in ("n", "psnr_infinite"):
        return f"{int(value):,}"
    if isinstance(value, float):
        metric = column.split("_")[0]
        if metric in _DECIMALS:
            return f"{value:.{_DECIMALS[metric]}f}"
        return f"{value:g}"
    return str(value)


def _counts_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    # Missing counts would otherwise turn the column into floats ("12.0") in the CSV.
    for column in ("n", "psnr_infinite"):
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    return frame


def _formatted(frame: pd.DataFrame) -> list[list[str]]:
    return [[_format(None if pd.isna(v) else v, c) if not isinstance(v, str) else v
             for c, v in row.items()] for _, row in frame.iterrows()]


def to_csv(frame: pd.DataFrame) -> str:
    # Six decimals: beyond that the digits are floating-point noise and would make reruns differ.
    return frame.round(6).to_csv(index=False, lineterminator="\n")


def to_markdown(frame: pd.DataFrame) -> str:
    cells = _formatted(frame)
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if c in ("source", "run", "model", "notes", "status",
                                         "training_set") else "---:"
                          for c in frame.columns) + "|"
    return "\n".join([header, rule] + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                          ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs tabular; rows of each `source` form a block under its own heading."""
    columns = [c for c in frame.columns if c != "source"]
    align = "".join("l" if c in ("run", "model", "notes", "status", "training_set") else "r"
                    for c in columns)
    lines = [f"% {caption}", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(_latex_escape(c) for c in columns) + " \\\\", "\\midrule"]
    cells = _formatted(frame)
    current = None
    for (_, row), formatted in zip(frame.iterrows(), cells, strict=True):
        source = row.get("source")
        if "source" in frame.columns and source != current:
            if current is not None:
                lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{len(columns)}}}{{l}}{{\\textit{{"
                         f"{_latex_escape(str(source))}}}}} \\\\")
            current = source
        values = [v for c, v in zip(frame.columns, formatted, strict=True) if c != "source"]
        lines.append(" & ".join(_latex_escape(v) for v in values) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _protocol_notes(summaries: list[dict]) -> list[str]:
    notes = []
    if summaries:
        fid_protocol = summaries[0]["fid"].get("protocol", {})
        if fid_protocol:
            notes.append(f"FID: {fid_protocol.get('network')}, {fid_protocol.get('layer')}, "
                         f"{fid_protocol.get('resize')}; real set: {fid_protocol.get('real_set')}.")
        ssim_protocol = summaries[0]["ssim"].get("protocol", {})
        if ssim_protocol:
            notes.append(f"SSIM: {ssim_protocol.get('window')} window, K1 {ssim_protocol.get('K1')}"
                         f", K2 {ssim_protocol.get('K2')}, data range "
                         f"{ssim_protocol.get('data_range')}, {ssim_protocol.get('colour_space')}."
                         " PSNR over all pixels; frames identical to their ground truth (PSNR inf)"
                         " are left out of the PSNR statistics and counted.")
    labels = sorted({label for s in summaries for label in s.get("labels", [])})
    notes += [f"**{label}** (runs: " + ", ".join(s["run"] for s in summaries
                                               if label in s.get("labels", [])) + ")"
              for label in labels]
    warnings = sorted({w for s in summaries for w in s.get("warnings", [])})
    notes += [f"Warning: {w}" for w in warnings]
    notes.append(f"Rows under '{PAPER}' are the published values, not results of this pipeline.")
    return notes


def write_tables(summary_paths: list[str | os.PathLike], output_dir: str | os.PathLike, *,
                 options: dict | None = None) -> dict[str, pd.DataFrame]:
    """Write fid, ssim_psnr and dataset_impact as .csv/.md/.tex, and summary.md, to output_dir.

    `options` (the report section) is accepted for the CLI contract; the tables need none of it.
    """
    summaries = load_summaries(summary_paths)
    output_dir = Path(output_dir)
    tables = {
        "fid": (fid_table(summaries), "FID per run (lower is better), N images per set"),
        "ssim_psnr": (ssim_psnr_table(summaries),
                      "Per-frame SSIM and PSNR (dB) over the test set (higher is better)"),
        "dataset_impact": (dataset_impact_table(summaries),
                           "LipGAN trained on GRIDSmall vs GRIDFull"),
    }
    for name, (frame, caption) in tables.items():
        write_text(output_dir / f"{name}.csv", to_csv(frame))
        write_text(output_dir / f"{name}.md", f"{caption}\n\n{to_markdown(frame)}")
        write_text(output_dir / f"{name}.tex", to_latex(frame, caption))
    missing = [run for _, run in DATASET_RUNS if run not in {s["run"] for s in summaries}]
    if missing:
        log.warning("dataset impact table: no summary for %s", ", ".join(missing))
    parts = ["# Results", ""]
    for title, name in (("FID", "fid"), ("SSIM and PSNR", "ssim_psnr"),
                        ("Dataset impact", "dataset_impact")):
        frame, caption = tables[name]
        parts += [f"## {title}", "", caption, "", to_markdown(frame)]
    parts += ["## Notes", ""] + [f"- {note}" for note in _protocol_notes(summaries)]
    write_text(output_dir / "summary.md", "\n".join(parts) + "\n")
    return {name: frame for name, (frame, _) in tables.items()}
