"""What a metric is: the base class every registered metric extends, and what scoring hands it.

A metric sees the aligned test samples in batches (`Batch`: generated and real uint8 faces of
samples [start, stop) in the test set's sample order) through `update`, and returns its values
from `result` at one of three levels:

- ``frame``: one value per sample and column (float64 arrays of length N; NaN where the metric
  could not be computed for that frame, with the reason counted in `Result.missing`);
- ``clip``: one row per test clip (a DataFrame with `speaker`, `clip` and the metric's columns);
- ``set``: one value per column for the whole set (a dict).

Work that depends only on the real test faces (FID's reference statistics, real landmarks) goes
into the optional classmethod `reference`; the workflow computes it once per test set and
protocol, and scoring hands it back as `context.reference`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

LEVELS = ("frame", "clip", "set")
NA = "n/a"  # how a missing value reads in logs and tables


@dataclass(frozen=True)
class Column:
    """One output column of a metric: what it means, which way is better, its unit."""

    name: str
    description: str
    higher_is_better: bool
    unit: str = ""
    decimals: int = 4
    # False for a column that describes another (KID's spread over subsets, the AV offset): the
    # tables show it, the sensitivity, agreement and progress studies do not rank by it.
    ranked: bool = True


@dataclass
class Context:
    """What a metric may read besides the batches: the test set, the sample table, the device,
    its reference data (see `Metric.reference`), and a cache shared by all metrics of one job."""

    test_set: Any  # lipsync.metrics.testset.TestSet, open for the whole job
    samples: pd.DataFrame  # sample, speaker, clip, frame; one row per sample, in sample order
    device: Any  # torch.device
    threads: int = 1
    run: str = ""
    evaluate: dict = field(default_factory=dict)  # the whole evaluate section (shared settings)
    reference: dict[str, np.ndarray] | None = None
    references: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # by metric name
    cache: dict = field(default_factory=dict)

    def shared(self, key, compute: Callable[[], Any]) -> Any:
        """`compute()` once per job and key (a network both FID and KID use, for example)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


@dataclass
class Batch:
    """Samples [start, stop): generated and real faces (uint8 B x H x W x 3, RGB)."""

    start: int
    stop: int
    generated: np.ndarray
    real: np.ndarray
    cache: dict = field(default_factory=dict)

    @property
    def samples(self) -> np.ndarray:
        return np.arange(self.start, self.stop, dtype=np.int64)

    def shared(self, key, compute: Callable[[], Any]) -> Any:
        """`compute()` once per batch and key: features several metrics read (e.g. Inception)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


@dataclass
class Result:
    """A metric's values at its level, plus why values are missing, labels and extra facts."""

    values: dict[str, np.ndarray] | pd.DataFrame | dict[str, float]
    missing: dict[str, int] = field(default_factory=dict)  # reason -> frames (or clips)
    labels: list[str] = field(default_factory=list)  # e.g. "random Inception weights: ..."
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # JSON-ready facts for the summary (e.g. N)


class Metric:
    """Base class of a registered metric; `lipsync.metrics.registry.register_metric` fills in
    the class attributes below from its arguments."""

    name: ClassVar[str] = ""
    level: ClassVar[str] = "frame"
    columns: ClassVar[tuple[Column, ...]] = ()
    # The Option table of its config section evaluate.<name>, and the defaults it declares.
    option_table: ClassVar[dict] = {}
    defaults: ClassVar[dict] = {}
    description: ClassVar[str] = ""
    # Another metric whose reference data this one reads (KID reads FID's Inception features).
    reference_of: ClassVar[str | None] = None

    def __init__(self, options: dict, context: Context):
        self.options = options
        self.context = context

    @classmethod
    def protocol(cls, options: dict) -> dict:
        """What the numbers mean: compared sets, resize, colour space, range, weights, counts."""
        raise NotImplementedError

    @classmethod
    def inputs(cls, options: dict) -> list[str]:
        """Files the metric reads (weights, an expert checkpoint): the workflow makes the score
        and reference jobs depend on them."""
        return []

    @classmethod
    def has_reference(cls) -> bool:
        return cls.reference.__func__ is not Metric.reference.__func__

    @classmethod
    def reference(cls, test_set, options: dict, *, device, threads: int = 1
                  ) -> dict[str, np.ndarray]:
        """Arrays computed from the real test faces only (overridden where there are any)."""
        raise NotImplementedError

    def update(self, batch: Batch) -> None:
        raise NotImplementedError

    def result(self) -> Result:
        raise NotImplementedError

    def resample(self, samples: np.ndarray) -> dict[str, float]:
        """Set-level metrics: the values on a resample of the samples (indices, repeats allowed),
        for bootstrap intervals. Frame and clip metrics are resampled by the scorer itself."""
        raise NotImplementedError


def shown(entry: dict, decimals: int | None = None) -> str:
    """A summary column as text: value [low, high] (the column's decimals unless given), or
    n/a (reason)."""
    decimals = int(entry.get("decimals", 4)) if decimals is None else decimals
    value = entry.get("value")
    if value is None:
        return f"{NA} ({entry['reason']})" if entry.get("reason") else NA
    text = f"{value:.{decimals}f}"
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        text += f" [{entry['ci_low']:.{decimals}f}, {entry['ci_high']:.{decimals}f}]"
    return text
