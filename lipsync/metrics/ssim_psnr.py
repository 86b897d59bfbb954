"""Per-frame SSIM and PSNR under scikit-image's protocol, batched in torch (CPU or GPU).

Protocol (scikit-image defaults): RGB uint8, data range 255, SSIM with a 7x7 uniform window,
K1 0.01, K2 0.03, sample covariance (N/(N-1)), mean over the valid region (3 pixels cropped at each
border) per channel, then averaged over channels; PSNR = 10 log10(R^2 / MSE) over all pixels and
channels. The torch backend (lipsync.metrics.kernels) forms the window sums and variance
numerators exactly (integers), so it matches `skimage.metrics` to about 1e-7 (SSIM) and 1e-12
(PSNR); the `skimage` backend (a per-frame loop) stays selectable and is the test oracle.
Identical frames have PSNR = inf, exactly as scikit-image returns.
"""

from __future__ import annotations

import warnings

import numpy as np

from lipsync.core.errors import LipsyncError
from lipsync.core.options import Option, defaults
from lipsync.metrics.base import Batch, Column, Metric, Result
from lipsync.metrics.kernels import K1, K2, WINDOW, psnr_torch, ssim_torch
from lipsync.metrics.registry import register_metric

OPTIONS = {
    "backend": Option("torch", str, "torch (fast, equal to scikit-image within 1e-6) or skimage "
                      "(the reference).", one_of=("torch", "skimage")),
    "data_range": Option(255, float, "Range of the pixel values (uint8 frames: 255).", above=0),
}
DEFAULTS = defaults(OPTIONS)


def settings(options: dict | None) -> dict:
    """The evaluate.ssim or evaluate.psnr options with the defaults filled in, checked."""
    merged = {**DEFAULTS, **(options or {})}
    if merged["backend"] not in ("torch", "skimage"):
        raise LipsyncError(f"evaluate.ssim / evaluate.psnr: backend must be torch or skimage, "
                           f"not {merged['backend']!r}")
    return merged


def ssim_protocol(options: dict | None = None) -> dict:
    s = settings(options)
    return {
        "definition": "skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=R)",
        "colour_space": "RGB", "dtype": "uint8", "data_range": s["data_range"],
        "resize": "none (native crop size)", "window": f"{WINDOW}x{WINDOW} uniform",
        "K1": K1, "K2": K2, "covariance": "sample (N/(N-1))",
        "reduction": "mean over the valid region (border of 3 cropped) per channel, "
                     "then mean over channels; one value per frame",
        "backend": s["backend"],
    }


def psnr_protocol(options: dict | None = None) -> dict:
    s = settings(options)
    return {
        "definition": "skimage.metrics.peak_signal_noise_ratio(a, b, data_range=R)",
        "colour_space": "RGB", "dtype": "uint8", "data_range": s["data_range"],
        "resize": "none (native crop size)",
        "reduction": "MSE over all pixels and channels; one value per frame",
        "infinite_values": "identical frames give inf (as scikit-image); summaries are over the "
                           "finite values and report how many were infinite",
        "backend": s["backend"],
    }


def ssim_skimage(generated, truth, *, data_range: float = 255) -> np.ndarray:
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(a, b, channel_axis=-1, data_range=data_range)
                     for a, b in zip(generated, truth, strict=True)], dtype=np.float64)


def psnr_skimage(generated, truth, *, data_range: float = 255) -> np.ndarray:
    from skimage.metrics import peak_signal_noise_ratio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical frames: divide by zero -> inf
        return np.array([peak_signal_noise_ratio(a, b, data_range=data_range)
                         for a, b in zip(generated, truth, strict=True)], dtype=np.float64)


def score_pairs(generated, truth, *, options: dict | None = None,
                device=None) -> tuple[np.ndarray, np.ndarray]:
    """(SSIM, PSNR) per pair of uint8 frames with the configured backend."""
    s = settings(options)
    if s["backend"] == "skimage":
        return (ssim_skimage(generated, truth, data_range=s["data_range"]),
                psnr_skimage(generated, truth, data_range=s["data_range"]))
    return (ssim_torch(generated, truth, data_range=s["data_range"], device=device),
            psnr_torch(generated, truth, data_range=s["data_range"], device=device))


class _PairMetric(Metric):
    """A per-frame comparison of each generated face with its ground truth."""

    def __init__(self, options, context):
        super().__init__(options, context)
        self.values: list[np.ndarray] = []

    def compare(self, generated: np.ndarray, real: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update(self, batch: Batch) -> None:
        self.values.append(self.compare(batch.generated, batch.real))

    def result(self) -> Result:
        values = np.concatenate(self.values) if self.values else np.empty(0)
        return Result({self.name: values},
                      extra={"n_infinite": int(np.isinf(values).sum())})


@register_metric("ssim", level="frame", options=OPTIONS,
                 description="structural similarity of each generated frame to its ground truth",
                 columns=(Column("ssim", "SSIM (scikit-image's defaults)", higher_is_better=True),))
class SSIM(_PairMetric):
    """Per-frame SSIM."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return ssim_protocol(options)

    def compare(self, generated, real):
        s = settings(self.options)
        if s["backend"] == "skimage":
            return ssim_skimage(generated, real, data_range=s["data_range"])
        return ssim_torch(generated, real, data_range=s["data_range"], device=self.context.device)


@register_metric("psnr", level="frame", options=OPTIONS,
                 description="peak signal-to-noise ratio of each generated frame to its ground truth",
                 columns=(Column("psnr", "PSNR over all pixels and channels (inf for identical "
                                         "frames, left out of means)", higher_is_better=True,
                                 unit="dB", decimals=2),))
class PSNR(_PairMetric):
    """Per-frame PSNR."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return psnr_protocol(options)

    def compare(self, generated, real):
        s = settings(self.options)
        if s["backend"] == "skimage":
            return psnr_skimage(generated, real, data_range=s["data_range"])
        return psnr_torch(generated, real, data_range=s["data_range"], device=self.context.device)
