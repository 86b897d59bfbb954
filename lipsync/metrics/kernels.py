"""Batched torch SSIM and PSNR kernels under scikit-image's protocol (CPU or GPU).

Registry-free on purpose: training validation imports these without pulling in the metric
registry (and with it every metric module). The registered metrics and their protocol live in
ssim_psnr.py; these kernels match `skimage.metrics` to about 1e-7 (SSIM) and 1e-12 (PSNR).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

WINDOW = 7
K1 = 0.01
K2 = 0.03
# Frames per step: small on CPU so the window sums stay in cache (a 4-frame step's temporaries
# are ~1 MB; on the shared 2-core machine at load 12, 1-4 frames per step ran 2x faster than 16,
# at low load 8-16 had measured fastest), large on GPU so each kernel launch has enough work.
_CPU_CHUNK = 4
_GPU_CHUNK = 1024


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
