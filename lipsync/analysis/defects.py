"""Controlled defects of graded strength applied to the real GRIDTest faces: each defect set is a
generated set (faces in the test set's sample order) that the ordinary `score` job scores with
every registered metric, so the sensitivity study needs no special case and no training.

Kinds and what `strength` means:
- ``desync``: the lower half (rows S//2..) of each face taken from the same clip `strength` frames
  later (reflected at the clip's end, so every sample gets a face `strength` frames away);
- ``frozen``: the lower half taken from the sample's fixed reference frame (strength ignored: 1);
- ``blur``: Gaussian blur of the whole face, sigma = strength pixels;
- ``jpeg``: JPEG re-encoding at quality = strength (OpenCV, 4:2:0);
- ``noise``: additive Gaussian noise, sigma = strength grey levels (seeded per sample);
- ``colour``: a shift of the red channel up and the blue channel down by strength grey levels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import h5py
import numpy as np

from lipsync.errors import LipsyncError
from lipsync.io import atomic_path
from lipsync.logs import get_logger
from lipsync.metrics.testset import TestSet, batches
from lipsync.progress import progress
from lipsync.provenance import describe

log = get_logger(__name__)

# Documented default strengths (config: analysis.defects); the demo uses fewer.
DEFAULT_STRENGTHS = {
    "desync": [1, 2, 4, 8],
    "frozen": [1],
    "blur": [0.5, 1, 2, 4],
    "jpeg": [90, 50, 20, 5],
    "noise": [2, 5, 10, 20],
    "colour": [5, 10, 20, 40],
}
SEED = 0


def system_name(kind: str, strength: float) -> str:
    """The name a defect set is scored under: defect-{kind}-{strength} (strength as %g)."""
    return f"defect-{kind}-{strength:g}"


def _lower_half(faces: np.ndarray, donors: np.ndarray) -> np.ndarray:
    out = faces.copy()
    half = faces.shape[1] // 2
    out[:, half:] = donors[:, half:]
    return out


def desync_crops(test_set: TestSet, samples: np.ndarray, offset: int) -> np.ndarray:
    """Crop index of the frame `offset` frames after each sample's target in the same clip,
    reflected back from the clip's last crop (so a clip of n crops always has a donor)."""
    crops = test_set.sample_crops[samples]
    clip_index = test_set.crop_clip_index()
    starts, counts = test_set.clip_crop_ranges()
    clips = clip_index[crops]
    start, count = starts[clips], counts[clips]
    position = crops - start + int(offset)
    period = np.maximum(2 * (count - 1), 1)
    position = np.mod(position, period)
    position = np.where(position >= count, period - position, position)
    return start + position


def _blur(faces: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(face, (0, 0), sigmaX=float(sigma)) for face in faces])


def _jpeg(faces: np.ndarray, quality: float) -> np.ndarray:
    out = np.empty_like(faces)
    for k, face in enumerate(faces):
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(face[..., ::-1]),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise LipsyncError(f"JPEG encoding at quality {quality} failed")
        out[k] = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return out


def _noise(faces: np.ndarray, sigma: float, samples: np.ndarray) -> np.ndarray:
    out = np.empty_like(faces)
    for k, sample in enumerate(samples):
        rng = np.random.default_rng([SEED, int(sample)])  # the same noise in any batch order
        out[k] = np.clip(faces[k] + rng.normal(0, sigma, faces[k].shape), 0, 255)
    return out


def _colour(faces: np.ndarray, shift: float) -> np.ndarray:
    out = faces.astype(np.int16)
    out[..., 0] += int(shift)
    out[..., 2] -= int(shift)
    return np.clip(out, 0, 255).astype(np.uint8)


def apply(kind: str, strength: float, test_set: TestSet, start: int, stop: int) -> np.ndarray:
    """Defective faces of samples [start, stop)."""
    samples = np.arange(start, stop, dtype=np.int64)
    real = test_set.ground_truth(start, stop)
    if kind == "desync":
        donors = test_set.read_crops(desync_crops(test_set, samples, int(strength)))
        return _lower_half(real, donors)
    if kind == "frozen":
        return _lower_half(real, test_set.references_of(samples))
    if kind == "blur":
        return _blur(real, strength)
    if kind == "jpeg":
        return _jpeg(real, strength)
    if kind == "noise":
        return _noise(real, strength, samples)
    if kind == "colour":
        return _colour(real, strength)
    raise LipsyncError(f"unknown defect kind {kind!r}; known: {', '.join(DEFAULT_STRENGTHS)}")


def make_defect_set(test_set: str | os.PathLike, kind: str, strength: float,
                    output: str | os.PathLike, *, batch_size: int = 512) -> Path:
    """Write the defect set `kind` at `strength` as a generated set (lipsync.generate's format)."""
    if kind not in DEFAULT_STRENGTHS:
        raise LipsyncError(f"unknown defect kind {kind!r} (analysis.defects); known: "
                           f"{', '.join(DEFAULT_STRENGTHS)}")
    with TestSet(test_set) as truth:
        n = truth.n_samples
        size = truth.image_shape
        with atomic_path(output) as tmp, h5py.File(tmp, "w") as handle:
            faces = handle.create_dataset("faces", (n, *size), np.uint8,
                                          chunks=(min(max(n, 1), 64), *size))
            handle.attrs.update({"model": "defect", "kind": kind, "strength": float(strength),
                                 "checkpoint": "", "test_set": str(Path(test_set).resolve()),
                                 "samples": n,
                                 "provenance": json.dumps(describe(), sort_keys=True)})
            with progress(total=n, desc=f"defect {kind} {strength:g}", unit="face") as bar:
                for start, stop in batches(n, batch_size):
                    faces[start:stop] = apply(kind, strength, truth, start, stop)
                    bar.update(stop - start)
    log.info("defect set %s (%d faces) -> %s", system_name(kind, strength), n, output)
    return Path(output)
