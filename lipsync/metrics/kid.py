"""Kernel Inception Distance (Binkowski et al. 2018) from the same Inception features as FID.

Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
subsets of equal size drawn without replacement from each set, as clean-fid's `kernel_distance`
and torch-fidelity compute it. The features are FID's (same network, weights and layer), so
scoring runs Inception once for both; the real features come from FID's reference data.
"""

from __future__ import annotations

import numpy as np

from lipsync.core.options import Option, defaults
from lipsync.metrics import fid
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.registry import options as metric_options
from lipsync.metrics.registry import register_metric

OPTIONS = {
    "subsets": Option(100, int, "Random subsets averaged (clean-fid, torch-fidelity: 100).",
                      minimum=1),
    "subset_size": Option(1000, int, "Images per subset (both: 1000), capped at the smaller set's "
                          "size.", minimum=2),
    "seed": Option(0, int, "Seeds the subsets."),
}
DEFAULTS = defaults(OPTIONS)


def polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between feature sets x and y (m x d each) with (x.y / d + 1)^3."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, d = len(x), x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(generated: np.ndarray, real: np.ndarray, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of the subset MMD^2 estimates."""
    m = min(len(generated), len(real), subset_size)
    if m < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    estimates = [polynomial_mmd(generated[rng.choice(len(generated), m, replace=False)],
                                real[rng.choice(len(real), m, replace=False)])
                 for _ in range(subsets)]
    return float(np.mean(estimates)), float(np.std(estimates))


@register_metric("kid", level="set", options=OPTIONS, reference_of="fid",
                 description="Kernel Inception Distance, generated vs ground-truth test faces",
                 columns=(Column("kid", "KID: unbiased polynomial-kernel MMD^2 of Inception "
                                        "features (mean over subsets)", higher_is_better=False,
                                 decimals=5),
                          Column("kid_std", "standard deviation of KID over subsets",
                                 higher_is_better=False, decimals=5, ranked=False)))
class KID(Metric):
    """KID on FID's Inception features."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return {"features": "FID's (evaluate.fid): same network, weights, layer and resize",
                "kernel": "polynomial (x.y / d + 1)^3", "estimator": "unbiased MMD^2",
                "subsets": options["subsets"], "subset_size": options["subset_size"],
                "subset_draw": "without replacement, numpy default_rng(seed)",
                "seed": options["seed"], "real_set": fid.REAL_SET}

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.fid_options = metric_options("fid", context.evaluate)
        self.rows: list[np.ndarray] = []
        self.features: np.ndarray | None = None

    def update(self, batch: Batch) -> None:
        self.rows.append(fid.inception_features(batch, self.context, self.fid_options))

    def _kid(self, generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
        mean, std = kernel_inception_distance(
            generated, real, subsets=self.options["subsets"],
            subset_size=self.options["subset_size"], seed=self.options["seed"])
        return {"kid": mean, "kid_std": std}

    def result(self) -> Result:
        self.features = np.concatenate(self.rows)
        real = self.context.reference["features"]
        return Result(self._kid(self.features, real), labels=fid.labels(self.fid_options),
                      extra={"n_generated": len(self.features), "n_reference": len(real)})

    def resample(self, samples: np.ndarray) -> dict[str, float]:
        return self._kid(self.features[samples], self.context.reference["features"][samples])
