"""Report figures: a qualitative grid of test samples per run, and the distribution of every per-frame metric.

The qualitative grid shows, for a fixed seeded set of test samples (columns), the ground truth, the
masked generator input (lower half zeroed, as LipGAN), the fixed reference frame and each run's
output (rows), at an exact integer scale so every face is pixel-true.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; set before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lipsync.core.errors import InputError  # noqa: E402
from lipsync.core.io import atomic_path  # noqa: E402
from lipsync.core.logs import get_logger  # noqa: E402
from lipsync.core.options import Option, defaults  # noqa: E402
from lipsync.metrics.testset import GeneratedSet, TestSet  # noqa: E402

log = get_logger(__name__)

# Config section `report`.
OPTIONS = {
    "qualitative_samples": Option(6, int, "Test samples shown side by side in the qualitative "
                                  "figure.", minimum=1),
    "seed": Option(0, int, "Seeds which samples are shown."),
}
DEFAULTS = defaults(OPTIONS)
SCALE = 2  # faces drawn at twice their 96 px so a printed page shows the mouth
GAP = 4  # white pixels between faces
LABEL_PX = 170  # left margin for row labels
HEADER_PX = 40  # top margin for column labels
DPI = 100
IDENTITY = "identity"


def choose_samples(n_samples: int, count: int, seed: int) -> np.ndarray:
    """A fixed, seeded, sorted choice of sample indices (the same for every run)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_samples, size=min(count, n_samples), replace=False))


def masked_input(faces: np.ndarray) -> np.ndarray:
    """The generator's masked target: the lower half of each face set to zero."""
    masked = faces.copy()
    masked[:, faces.shape[1] // 2:] = 0
    return masked


def _run_order(names: list[str]) -> list[int]:
    from lipsync.report.tables import system_order

    return sorted(range(len(names)), key=lambda i: system_order(names[i]))


def qualitative_size(n_rows: int, n_columns: int, face_px: int = 96) -> tuple[int, int]:
    """(width, height) in pixels of the qualitative figure."""
    cell = face_px * SCALE + GAP
    return LABEL_PX + n_columns * cell, HEADER_PX + n_rows * cell


def _mosaic(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of B x H x W x 3 faces -> one uint8 image, faces upscaled by SCALE, GAP apart."""
    n_columns, height, width = rows[0].shape[:3]
    cell_h, cell_w = height * SCALE + GAP, width * SCALE + GAP
    mosaic = np.full((len(rows) * cell_h, n_columns * cell_w, 3), 255, dtype=np.uint8)
    for r, faces in enumerate(rows):
        for c, face in enumerate(faces):
            big = face.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
            top, left = r * cell_h + GAP // 2, c * cell_w + GAP // 2
            mosaic[top:top + height * SCALE, left:left + width * SCALE] = big
    return mosaic


def panels(count: int, width: float, height: float, per_row: int = 3):
    """A figure with `count` panels of width x height inches, `per_row` at most per row; the
    unused cells of the last row are hidden. Returns (figure, the panels' axes)."""
    count = max(1, count)
    n_columns = min(per_row, count)
    n_rows = -(-count // n_columns)
    figure, axes = plt.subplots(n_rows, n_columns, figsize=(width * n_columns, height * n_rows),
                                dpi=DPI, squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_axis_off()
    return figure, list(axes.flat[:count])


def save(figure, path: str | os.PathLike) -> None:
    """Write a figure as PNG, atomically, and close it."""
    _save(figure, path)


def _save(figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        # No "Software" stamp: the PNG bytes then depend only on the content.
        figure.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(figure)


def qualitative_figure(test_set: str | os.PathLike, generated_paths: list[str | os.PathLike],
                       output_png: str | os.PathLike, *, options: dict | None = None) -> np.ndarray:
    """Write the qualitative grid; returns the chosen sample indices."""
    s = {**DEFAULTS, **(options or {})}
    with TestSet(test_set) as data:
        samples = choose_samples(data.n_samples, s["qualitative_samples"], s["seed"])
        truth = data.ground_truth_of(samples)
        rows = [("ground truth", truth), ("masked input", masked_input(truth)),
                ("reference", data.references_of(samples))]
        table = data.sample_table().iloc[samples]
        generated = []
        for path in generated_paths:
            with GeneratedSet(path) as output:
                if output.n_samples != data.n_samples:
                    raise InputError(path, f"has {output.n_samples} faces, the test set "
                                           f"{test_set} has {data.n_samples} samples")
                generated.append((output.run, output.faces_of(samples)))
    names = [name for name, _ in generated]
    rows += [generated[i] for i in _run_order(names)]
    mosaic = _mosaic([faces for _, faces in rows])
    width, height = qualitative_size(len(rows), len(samples), truth.shape[1])
    figure = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    # The axes cover the mosaic's exact pixel rectangle, so imshow draws it 1:1.
    axes = figure.add_axes((LABEL_PX / width, 0, mosaic.shape[1] / width, mosaic.shape[0] / height))
    axes.imshow(mosaic, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    cell_h = truth.shape[1] * SCALE + GAP
    cell_w = truth.shape[2] * SCALE + GAP
    for r, (label, _) in enumerate(rows):
        y = 1 - (HEADER_PX + (r + 0.5) * cell_h) / height
        figure.text(8 / width, y, label, ha="left", va="center", fontsize=10)
    for c, (_, sample) in enumerate(table.iterrows()):
        x = (LABEL_PX + (c + 0.5) * cell_w) / width
        figure.text(x, 1 - 4 / height, f"#{sample['sample']}\n{sample['speaker']} "
                    f"{sample['clip']} f{sample['frame']}", ha="center", va="top", fontsize=7)
    _save(figure, output_png)
    log.info("qualitative figure of samples %s, rows %s -> %s", samples.tolist(),
             [label for label, _ in rows], output_png)
    return samples


ID_COLUMNS = ("sample", "speaker", "clip", "frame")


def _read_scores(path: str | os.PathLike) -> pd.DataFrame:
    if not Path(path).is_file():
        raise InputError(path, "scores TSV not found")
    frame = pd.read_csv(path, sep="\t")
    missing = set(ID_COLUMNS) - set(frame.columns)
    if missing:
        raise InputError(path, f"scores TSV lacks column(s) {', '.join(sorted(missing))}")
    if len(frame.columns) == len(ID_COLUMNS):
        raise InputError(path, "scores TSV has no metric columns")
    return frame


def metric_columns(frames: list[pd.DataFrame]) -> list[str]:
    """Per-frame metric columns in their order of first appearance (every non-id column)."""
    columns: list[str] = []
    for frame in frames:
        columns += [c for c in frame.columns if c not in ID_COLUMNS and c not in columns]
    return columns


def distributions_figure(score_paths: list[str | os.PathLike],
                         output_png: str | os.PathLike) -> None:
    """Violin plots of every per-frame metric column, one violin per run (run = the scores'
    folder); infinite values (PSNR of identical frames) are counted under the run's name."""
    names = [Path(path).parent.name for path in score_paths]
    frames = [_read_scores(path) for path in score_paths]
    order = _run_order(names)
    names, frames = [names[i] for i in order], [frames[i] for i in order]
    columns = metric_columns(frames)
    figure, axes = panels(len(columns), 5, 4.5)
    for axis, metric in zip(axes, columns, strict=False):
        values = [frame[metric].to_numpy(dtype=np.float64) if metric in frame
                  else np.full(len(frame), np.nan) for frame in frames]
        finite = [v[np.isfinite(v)] for v in values]
        positions = [i for i, v in enumerate(finite) if v.size]
        if positions:
            axis.violinplot([finite[i] for i in positions], positions=positions,
                            showmedians=True, showextrema=True)
        labels = []
        for name, v in zip(names, values, strict=True):
            infinite = int(np.isinf(v).sum())
            labels.append(f"{name}\n(+{infinite} inf)" if infinite else name)
        axis.set_xticks(range(len(names)), labels, rotation=20, ha="right", fontsize=8)
        axis.set_ylabel(f"{metric} per frame")
        counts = ", ".join(str(int(np.isfinite(v).sum())) for v in values)
        axis.set_title(f"{metric} per frame (finite N = {counts})", fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    _save(figure, output_png)
    log.info("metric distributions of %s over %s -> %s", names, columns, output_png)


def write_figures(test_set: str | os.PathLike, generated_paths: list[str | os.PathLike],
                  score_paths: list[str | os.PathLike], qualitative_png: str | os.PathLike,
                  distributions_png: str | os.PathLike, *, options: dict | None = None) -> None:
    """Both report figures; `options` is the config's report section."""
    qualitative_figure(test_set, generated_paths, qualitative_png, options=options)
    distributions_figure(score_paths, distributions_png)
