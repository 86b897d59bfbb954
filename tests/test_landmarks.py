"""Mouth landmark distance (LMD) and mouth-opening error on real GRID crops: zero against itself,
about k px for a k-pixel shift, growing with lip desync; blank frames and missing models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import smooth_faces

from lipsync.core.errors import InputError, LipsyncError
from lipsync.data import decode, detectors, faces
from lipsync.metrics import landmarks

DESYNC_CLIPS = 4  # s1 clips averaged: single clips plateau after ~5 frames of desync
MAX_DESYNC = 8


def fixed_box_crops(video: Path, frames: slice = slice(None)) -> np.ndarray:
    """96x96 crops of a real clip cut with one box: the median of OpenCV's largest face box on
    three frames (the pipeline's detector and cropping, without tracking, for speed)."""
    video_frames, _ = decode.read_video(video)
    video_frames = video_frames[frames]
    detector = detectors.build(faces.FACES_DEFAULTS)
    probes = video_frames[[0, len(video_frames) // 2, -1]]
    boxes = [detectors.largest_box(rows) for rows in detector.detect(probes)]
    box = np.median(np.stack([b for b in boxes if b is not None]), axis=0)
    return faces.crop_faces(video_frames, np.repeat(box[None], len(video_frames), axis=0), 96)


def shifted(image: np.ndarray, dx: float, dy: float = 0.0) -> np.ndarray:
    """The image moved by (dx, dy) px, edges repeated."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def desynced(crops: np.ndarray, k: int, count: int) -> np.ndarray:
    """Frames 0..count-1 with the lower half taken from the frame k later in the same clip."""
    out = crops[:count].copy()
    out[:, crops.shape[1] // 2:] = crops[k:k + count, crops.shape[1] // 2:]
    return out


@pytest.fixture(scope="module")
def predictor() -> landmarks.DlibLandmarks:
    return landmarks.DlibLandmarks(landmarks.weights_file({}))


@pytest.fixture(scope="module")
def sample_crops(grid_samples) -> np.ndarray:
    return fixed_box_crops(grid_samples / "bbaf2n.mpg", slice(20, 30))


def test_mouth_landmarks_fall_in_the_lower_part_of_a_real_crop(predictor, sample_crops):
    points = predictor(sample_crops)
    assert points.shape == (10, 68, 2)
    mouth = points[:, landmarks.MOUTH]
    assert 60 < mouth[..., 1].min() and mouth[..., 1].max() < 95
    assert (landmarks.mouth_opening(points) >= 0).all()


def test_lmd_of_a_frame_against_itself_is_zero(predictor, sample_crops):
    points = predictor(sample_crops)
    again = predictor(sample_crops.copy())
    assert landmarks.mouth_distance(again, points) == pytest.approx(np.zeros(10), abs=0)
    assert np.abs(landmarks.mouth_opening(again) - landmarks.mouth_opening(points)).max() == 0


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_lmd_grows_with_a_known_shift_of_the_face(predictor, sample_crops, k):
    """The face box stays the whole crop, so moving the face k px moves its mouth k px."""
    points = predictor(sample_crops[:4])
    moved = predictor(np.stack([shifted(image, k) for image in sample_crops[:4]]))
    lmd = landmarks.mouth_distance(moved, points)
    assert lmd.mean() == pytest.approx(k, abs=0.35)
    # a rigid shift leaves the opening of the mouth as it was
    opening_error = np.abs(landmarks.mouth_opening(moved) - landmarks.mouth_opening(points))
    assert opening_error.mean() < 1.0  # dlib points are whole pixels: up to ~1 px of noise


def test_lip_desync_of_k_frames_raises_mean_lmd_monotonically(predictor, grid_s1):
    clips = sorted((grid_s1 / "s1").glob("*.mpg"))[:DESYNC_CLIPS]
    count = 75 - MAX_DESYNC
    curves = []
    for video in clips:
        crops = fixed_box_crops(video)
        real = predictor(crops[:count])
        curves.append([landmarks.mouth_distance(predictor(desynced(crops, k, count)), real).mean()
                       for k in range(MAX_DESYNC + 1)])
    mean = np.mean(curves, axis=0)
    assert mean[0] == 0
    assert (np.diff(mean) > 0).all(), f"mean LMD per desync k = 0..{MAX_DESYNC}: {mean}"


def test_blank_or_degenerate_frames_are_nan_with_the_reason(predictor, sample_crops):
    grey = np.full((1, 96, 96, 3), 128, np.uint8)
    images = np.concatenate([sample_crops[:1], grey])
    points, reasons = landmarks.checked(images, predictor(images))
    assert reasons[0] == "" and np.isfinite(points[0]).all()
    assert "blank frame" in reasons[1] and np.isnan(points[1]).all()
    collapsed = predictor(sample_crops[:1]).copy()
    collapsed[0, landmarks.MOUTH] = 50.0
    _, reasons = landmarks.checked(sample_crops[:1], collapsed)
    assert "collapsed mouth" in reasons[0]


def test_missing_predictor_file_names_the_config_key(tmp_path):
    with pytest.raises(LipsyncError, match=r"evaluate\.lmd\.predictor"):
        landmarks.protocol({"predictor": str(tmp_path / "missing.dat")})
    with pytest.raises(LipsyncError, match=r"evaluate\.lmd\.fan_weights"):
        landmarks.weights_file({"backend": "fan"})
    with pytest.raises(LipsyncError, match=r"evaluate\.lmd\.backend"):
        landmarks.settings({"backend": "mediapipe"})


def test_fan_backend_loads_local_weights_and_places_68_points(tmp_path):
    """A randomly initialised FAN-4 of face-alignment's architecture stands in for the
    published weights, which cannot be downloaded here (and face-shaped noise for faces)."""
    images = smooth_faces(2, seed=0)
    torch.manual_seed(0)
    weights = tmp_path / "2DFAN4-random.pth.tar"
    torch.save(landmarks.build_fan(None).state_dict(), weights)
    options = {"backend": "fan", "fan_weights": str(weights)}
    points = landmarks.build_backend(options)(images)
    assert points.shape == (2, 68, 2) and np.isfinite(points).all()
    # heatmap peaks lie in the square face-alignment crops around the box (side 200 * scale,
    # centre raised 0.12 box heights): about twice the crop's side
    side, centre = 200 * 192 / landmarks.FAN_REFERENCE_SCALE, np.array([48, 48 - 0.12 * 96])
    assert (np.abs(points - centre) <= side / 2).all()
    assert landmarks.protocol(options)["weights"]["file"] == weights.name
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="garbage.pth"):
        landmarks.build_backend({"backend": "fan", "fan_weights": str(garbage)})


def test_worker_processes_give_the_landmarks_of_one_process():
    images = smooth_faces(40, seed=1)
    with landmarks.mapper({}, workers=1) as one, \
            landmarks.mapper({}, workers=2, min_frames_per_worker=8) as two:
        assert np.array_equal(two(images), one(images))
        assert two._pool is not None


def test_fan_heatmap_peak_decodes_to_its_cell_centre_in_image_pixels():
    heatmaps = np.zeros((1, 68, 64, 64), np.float32)
    heatmaps[0, :, 20, 40] = 1.0  # symmetric neighbours: no quarter-pixel shift
    heatmaps[0, 5, 20, 41] = 0.5  # a higher right neighbour: a quarter cell to the right
    center, scale = np.array([48.0, 36.0]), 192 / 195
    points = landmarks.heatmap_points(heatmaps, center, scale, 64)
    cell = 200 * scale / 64
    expected = (np.array([40.5, 20.5]) - 32) * cell + center
    assert points[0, 0] == pytest.approx(expected, abs=1e-4)
    assert points[0, 5] == pytest.approx(expected + [0.25 * cell, 0], abs=1e-4)
