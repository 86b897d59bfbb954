"""Bootstrap confidence intervals over clips: frames of one clip are correlated, so whole clips
are resampled (with replacement), never single frames.

Per-frame metrics: the mean over the finite frame values of the resampled clips. Per-clip
metrics: the mean over the resampled clips. Per-set metrics (FID, KID): the metric recomputed on
the frames of the resampled clips (`Metric.resample`). Intervals are percentile intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lipsync.core.options import Option, defaults

# Config section `evaluate.bootstrap`: confidence intervals by resampling test clips.
OPTIONS = {
    "confidence": Option(0.95, float, "Coverage of the intervals.", above=0, below=1),
    "resamples": Option(1000, int, "Resamples for means of frame and clip values: cheap (sums per "
                        "clip), so many.", minimum=0),
    "set_resamples": Option(20, int, "Resamples for set metrics (FID, KID): each recomputes the "
                            "metric (FID: a 2048-d covariance and a matrix square root, seconds "
                            "at GRIDTest size), so few; the interval is coarser.", minimum=0),
    "seed": Option(0, int, "Seeds the resampling."),
}
DEFAULTS = defaults(OPTIONS)


def settings(options: dict | None) -> dict:
    return {**DEFAULTS, **(options or {})}


def protocol(options: dict | None) -> dict:
    s = settings(options)
    return {"unit": "clip (all frames of a resampled clip enter together)",
            "interval": "percentile", "confidence": s["confidence"],
            "resamples": s["resamples"], "set_resamples": s["set_resamples"], "seed": s["seed"]}


def clip_members(samples: pd.DataFrame) -> list[np.ndarray]:
    """Sample indices of each (speaker, clip), in order of first appearance."""
    keys = samples["speaker"].astype(str) + "/" + samples["clip"].astype(str)
    codes, _ = pd.factorize(keys)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order.astype(np.int64), bounds) if len(order) else []


def draws(n_clips: int, resamples: int, seed: int) -> np.ndarray:
    """resamples x n_clips clip indices drawn with replacement (seeded)."""
    rng = np.random.default_rng([seed, 0xB007])
    return rng.integers(0, n_clips, size=(resamples, n_clips))


def interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def mean_interval(values: np.ndarray, members: list[np.ndarray],
                  options: dict | None = None) -> tuple[float | None, float | None]:
    """Interval of the mean of finite `values` (one per sample) with clips resampled."""
    s = settings(options)
    values = np.asarray(values, dtype=np.float64)
    if not members:
        return None, None
    finite = np.isfinite(values)
    sums = np.array([values[m][finite[m]].sum() for m in members])
    counts = np.array([finite[m].sum() for m in members], dtype=np.float64)
    chosen = draws(len(members), s["resamples"], s["seed"])
    totals, sizes = sums[chosen].sum(axis=1), counts[chosen].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = totals / sizes
    return interval(means, s["confidence"])


def set_interval(resample, members: list[np.ndarray], columns: list[str],
                 options: dict | None = None) -> dict[str, tuple[float | None, float | None]]:
    """Interval of each column of a set metric; `resample(sample_indices) -> {column: value}`."""
    s = settings(options)
    if not members or s["set_resamples"] <= 0:
        return {column: (None, None) for column in columns}
    values = {column: [] for column in columns}
    for chosen in draws(len(members), s["set_resamples"], s["seed"]):
        outcome = resample(np.concatenate([members[k] for k in chosen]))
        for column in columns:
            value = outcome.get(column)
            values[column].append(np.nan if value is None else value)
    return {column: interval(np.array(v), s["confidence"]) for column, v in values.items()}


def describe(values: np.ndarray) -> dict:
    """mean/median/max/min over the finite values, with counts (JSON-safe: no inf or NaN)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    stats = {"n": int(values.size), "n_finite": int(finite.size),
             "n_infinite": int(np.isinf(values).sum()), "n_nan": int(np.isnan(values).sum())}
    for name, reduce in (("mean", np.mean), ("median", np.median), ("max", np.max),
                         ("min", np.min)):
        stats[name] = float(reduce(finite)) if finite.size else None
    return stats
