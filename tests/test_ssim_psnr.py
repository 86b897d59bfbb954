"""Batched SSIM and PSNR equal scikit-image's per-frame functions (the protocol's definition)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lipsync.core.errors import LipsyncError
from lipsync.metrics import ssim_psnr

TOLERANCE = 1e-5


def skimage_scores(generated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ssim = [structural_similarity(a, b, channel_axis=-1, data_range=255)
            for a, b in zip(generated, truth, strict=True)]
    with np.errstate(divide="ignore"):
        psnr = [peak_signal_noise_ratio(b, a, data_range=255)
                for a, b in zip(generated, truth, strict=True)]
    return np.array(ssim), np.array(psnr)


def random_pairs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)
    noise = rng.normal(0, rng.uniform(1, 60, (count, 1, 1, 1)), truth.shape)
    return np.clip(truth + noise, 0, 255).astype(np.uint8), truth


def test_batched_ssim_and_psnr_equal_scikit_image_on_random_frames():
    torch.set_num_threads(1)
    generated, truth = random_pairs(40, seed=0)
    # Extremes: black vs white, flat grey vs noise (zero variance in one image).
    generated[0], truth[0] = 0, 255
    generated[1] = 128
    expected_ssim, expected_psnr = skimage_scores(generated, truth)
    assert np.abs(ssim_psnr.ssim_torch(generated, truth) - expected_ssim).max() <= TOLERANCE
    assert np.abs(ssim_psnr.psnr_torch(generated, truth) - expected_psnr).max() <= TOLERANCE


def test_identical_frames_give_ssim_one_and_psnr_inf_as_scikit_image():
    _, truth = random_pairs(3, seed=1)
    assert ssim_psnr.ssim_torch(truth, truth) == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    assert np.isposinf(ssim_psnr.psnr_torch(truth, truth)).all()
    assert np.isposinf(ssim_psnr.psnr_skimage(truth, truth)).all()


def test_batched_scores_equal_scikit_image_on_real_grid_crops(grid_s1):
    av = pytest.importorskip("av")
    clips = sorted((grid_s1 / "s1").glob("*.mpg"))[:2]
    crops = []
    for clip in clips:
        with av.open(str(clip)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % 10 == 0:
                    image = frame.to_ndarray(format="rgb24")
                    # A fixed 96x96 window over the lower face of the centred speaker.
                    top, left = image.shape[0] // 2 - 10, image.shape[1] // 2 - 48
                    crops.append(image[top:top + 96, left:left + 96])
                if index >= 60:
                    break
    crops = np.stack(crops)
    assert len(crops) >= 8
    # Neighbouring frames (small motion) and frames of different clips (larger change).
    generated, truth = crops[1:], crops[:-1]
    expected_ssim, expected_psnr = skimage_scores(generated, truth)
    ssim, psnr = ssim_psnr.score_pairs(generated, truth, options={"backend": "torch"})
    assert np.abs(ssim - expected_ssim).max() <= TOLERANCE
    finite = np.isfinite(expected_psnr)
    assert np.array_equal(np.isfinite(psnr), finite)
    assert np.abs(psnr[finite] - expected_psnr[finite]).max() <= TOLERANCE
    assert 0.2 < expected_ssim.min() and expected_ssim.max() < 1  # real, not degenerate, pairs


def test_skimage_backend_is_selectable_and_agrees_with_torch():
    generated, truth = random_pairs(6, seed=2)
    torch_scores = ssim_psnr.score_pairs(generated, truth, options={"backend": "torch"})
    skimage_backend = ssim_psnr.score_pairs(generated, truth, options={"backend": "skimage"})
    for batched, looped in zip(torch_scores, skimage_backend, strict=True):
        assert np.abs(batched - looped).max() <= TOLERANCE
    assert ssim_psnr.ssim_protocol({"backend": "skimage"})["backend"] == "skimage"


def test_data_range_changes_the_ssim_constants_as_in_scikit_image():
    generated, truth = random_pairs(4, seed=3)
    expected = [structural_similarity(a, b, channel_axis=-1, data_range=100)
                for a, b in zip(generated, truth, strict=True)]
    assert np.abs(ssim_psnr.ssim_torch(generated, truth, data_range=100) - expected).max() <= 1e-5


def test_unknown_backend_and_non_uint8_frames_are_refused():
    with pytest.raises(LipsyncError, match="backend must be torch or skimage"):
        ssim_psnr.settings({"backend": "opencv"})
    with pytest.raises(ValueError, match="uint8"):
        ssim_psnr.ssim_torch(np.zeros((1, 96, 96, 3)), np.zeros((1, 96, 96, 3)))


def test_summary_statistics_leave_out_infinite_psnr_and_count_it():
    from lipsync.metrics.bootstrap import describe

    stats = describe(np.array([20.0, np.inf, 30.0, 40.0]))
    assert stats["mean"] == pytest.approx(30.0) and stats["median"] == pytest.approx(30.0)
    assert (stats["max"], stats["min"]) == (40.0, 20.0)
    assert (stats["n"], stats["n_finite"], stats["n_infinite"]) == (4, 3, 1)
    assert describe(np.array([np.inf]))["mean"] is None


def test_kernels_import_no_metric_registry():
    # Training validation imports the kernels; the registry would pull in every metric module.
    code = ("import sys, lipsync.metrics.kernels; "
            "assert not any(m in sys.modules for m in "
            "('lipsync.metrics.registry', 'lipsync.metrics.base')), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
