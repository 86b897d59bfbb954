"""The metrics by name (fid, ssim, psnr): what each computes and the protocol it is computed under.

Every metric states its protocol (resize mode, colour space, data range, sample count) as a dict
that is written beside its results, so a number never travels without how it was made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lipsync.errors import LipsyncError
from lipsync.metrics import fid, ssim_psnr


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    per_frame: bool  # one value per generated frame (ssim, psnr) or one per set (fid)
    higher_is_better: bool
    unit: str
    # options (the evaluate section) -> protocol dict
    protocol: Callable[[dict], dict]
    # per-frame metrics: (generated, truth, *, data_range, device) -> float64 array per frame;
    # fid: (mu1, sigma1, mu2, sigma2) -> float
    compute: Callable


def _fid_protocol(options: dict) -> dict:
    return fid.protocol((options or {}).get("fid"))


def _ssim_protocol(options: dict) -> dict:
    return ssim_psnr.ssim_protocol((options or {}).get("ssim_psnr"))


def _psnr_protocol(options: dict) -> dict:
    return ssim_psnr.psnr_protocol((options or {}).get("ssim_psnr"))


METRICS: dict[str, Metric] = {
    "fid": Metric("fid", "Fréchet Inception Distance, generated vs ground-truth test faces",
                  per_frame=False, higher_is_better=False, unit="",
                  protocol=_fid_protocol, compute=fid.frechet_distance),
    "ssim": Metric("ssim", "structural similarity of each generated frame to its ground truth",
                   per_frame=True, higher_is_better=True, unit="",
                   protocol=_ssim_protocol, compute=ssim_psnr.ssim_torch),
    "psnr": Metric("psnr", "peak signal-to-noise ratio of each generated frame to its ground truth",
                   per_frame=True, higher_is_better=True, unit="dB",
                   protocol=_psnr_protocol, compute=ssim_psnr.psnr_torch),
}


def get(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise LipsyncError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}") from None


def protocols(options: dict, n_samples: int | None = None) -> dict[str, dict]:
    """Protocol of every metric under the evaluate options, with the sample count when known."""
    out = {}
    for name, metric in METRICS.items():
        record = metric.protocol(options)
        if n_samples is not None:
            record["sample_count"] = n_samples
        out[name] = record
    return out
