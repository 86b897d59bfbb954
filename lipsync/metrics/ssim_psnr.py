"""Per-frame SSIM and PSNR under scikit-image's protocol, batched in torch (CPU or GPU).

Protocol (scikit-image defaults): RGB uint8, data range 255, SSIM with a 7x7 uniform window,
K1 0.01, K2 0.03, sample covariance (N/(N-1)), mean over the valid region (3 pixels cropped at each
border) per channel, then averaged over channels; PSNR = 10 log10(R^2 / MSE) over all pixels and
channels. The torch backend forms the window sums and variance numerators exactly (integers), so
it matches `skimage.metrics` to about 1e-7 (SSIM) and 1e-12 (PSNR); the `skimage` backend (a
per-frame loop) stays selectable and is the test oracle. Identical frames have PSNR = inf, exactly as scikit-image returns.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from lipsync.errors import LipsyncError
from lipsync.metrics.base import Batch, Column, Metric, Result
from lipsync.metrics.registry import register_metric
from lipsync.options import Option, defaults

WINDOW = 7
K1 = 0.01
K2 = 0.03
OPTIONS = {
    "backend": Option("torch", str, "torch (fast, equal to scikit-image within 1e-6) or skimage "
                      "(the reference).", one_of=("torch", "skimage")),
    "data_range": Option(255, float, "Range of the pixel values (uint8 frames: 255).", above=0),
}
DEFAULTS = defaults(OPTIONS)
# Frames per step: small on CPU so the window sums stay in cache (measured fastest at 8-16),
# large on GPU so each kernel launch has enough work.
_CPU_CHUNK = 16
_GPU_CHUNK = 1024


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


def _as_tensor(images, device) -> torch.Tensor:
    """uint8 B x H x W x 3 (numpy or torch) -> uint8 tensor on `device`, same layout."""
    tensor = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"expected uint8 B x H x W x 3 frames, got {tensor.dtype} "
                         f"{tuple(tensor.shape)}")
    return tensor.to(device)


def _window_sums(x: torch.Tensor) -> torch.Tensor:
    """Sums over every full 7x7 window (the valid region): B x C x H-6 x W-6.

    Inputs are integer-valued float32 at most 255^2, so every partial sum stays below
    49 * 255^2 < 2^24 and is exact.
    """
    width = x.shape[-1] - WINDOW + 1
    rows = x[..., 0:width].clone()
    for k in range(1, WINDOW):
        rows += x[..., k:k + width]
    height = x.shape[-2] - WINDOW + 1
    sums = rows[..., 0:height, :].clone()
    for k in range(1, WINDOW):
        sums += rows[..., k:k + height, :]
    return sums


def _ssim_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """SSIM of uint8 frames B x H x W x 3 -> float64 B."""
    x = x.permute(0, 3, 1, 2).float().contiguous()
    y = y.permute(0, 3, 1, 2).float().contiguous()
    n = WINDOW * WINDOW
    sx, sy = _window_sums(x), _window_sums(y)
    sxx, syy, sxy = _window_sums(x * x), _window_sums(y * y), _window_sums(x * y)
    # skimage: u = S/n and v = n/(n-1) (uxx - u^2) = (n Sxx - Sx^2) / (n (n-1)). The variance
    # numerators are formed in int32 (< 2^31), exactly, so the float32 arithmetic after them never
    # subtracts nearly equal numbers; every remaining rounding is relative (~1e-7). Scaling both
    # factors of numerator and denominator by n^2 and n (n-1) leaves SSIM unchanged.
    sx_i, sy_i = sx.int(), sy.int()
    dx = (n * sxx.int() - sx_i * sx_i).float()
    dy = (n * syy.int() - sy_i * sy_i).float()
    dxy = (n * sxy.int() - sx_i * sy_i).float()
    c1 = (K1 * data_range) ** 2 * n * n
    c2 = (K2 * data_range) ** 2 * n * (n - 1)
    ssim_map = ((2 * sx * sy + c1) * (2 * dxy + c2)) / ((sx * sx + sy * sy + c1) * (dx + dy + c2))
    return ssim_map.mean(dim=(-1, -2)).double().mean(dim=-1)


@contextlib.contextmanager
def _cpu_threads(device: torch.device):
    """One intra-op thread on the CPU: these small elementwise kernels only lose to threading
    (measured 2.4-25x slower than scikit-image's loop at 2 threads on a busy 2-core machine);
    the scorer's other threads stay for the Inception network."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def ssim_torch(generated, truth, *, data_range: float = 255, device=None) -> np.ndarray:
    """SSIM of each pair of uint8 B x H x W x 3 frames (float64, length B)."""
    device = _device(device)
    x_all, y_all = _as_tensor(generated, device), _as_tensor(truth, device)
    if x_all.shape != y_all.shape:
        raise ValueError(f"shape mismatch {tuple(x_all.shape)} vs {tuple(y_all.shape)}")
    if min(x_all.shape[1:3]) < WINDOW:
        raise ValueError(f"frames smaller than the {WINDOW}x{WINDOW} SSIM window")
    step = _GPU_CHUNK if device.type == "cuda" else _CPU_CHUNK
    with torch.inference_mode(), _cpu_threads(device):
        out = [_ssim_chunk(x_all[i:i + step], y_all[i:i + step], data_range)
               for i in range(0, x_all.shape[0], step)]
    return torch.cat(out).cpu().numpy() if out else np.empty(0)


def psnr_torch(generated, truth, *, data_range: float = 255, device=None) -> np.ndarray:
    """PSNR in dB of each pair of uint8 frames (float64, inf for identical frames)."""
    device = _device(device)
    x, y = _as_tensor(generated, device), _as_tensor(truth, device)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.shape[0] == 0:
        return np.empty(0)
    with torch.inference_mode(), _cpu_threads(device):
        difference = (x.to(torch.int16) - y.to(torch.int16)).float()
        # Squared errors summed in groups of W consecutive values (W * 255^2 < 2^24 for W <= 258)
        # are exact in float32; the group totals are summed in float64: the total is the exact
        # integer, and one division gives skimage's float64 MSE.
        rows = difference.reshape(difference.shape[0], -1, difference.shape[2])
        squared = torch.linalg.vecdot(rows, rows).double().sum(dim=-1)
        mse = squared / difference[0].numel()
        psnr = 10 * torch.log10(data_range ** 2 / mse)  # mse 0 -> +inf, as scikit-image
    return psnr.cpu().numpy()


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
