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
- ``colour``: a shift of the red channel up and the blue channel down by strength grey levels;
- ``jitter``: the whole face shifted by a random whole-pixel offset in [-strength, strength] on
  each axis, drawn per frame (seeded per sample; edges replicated): a shake only time shows;
- ``flicker``: the whole face brightened or darkened by strength grey levels, the sign drawn per
  frame (seeded per sample);
- ``content_swap``: the lower half taken from another sentence of the same speaker in the test
  set, time-aligned word slot by word slot with the GRID word alignments (frame t in word k of
  this clip takes the frame at the same relative position in word k of the donor): in rhythm,
  wrong words. The donor is the test clip of the same speaker that differs in the most word
  slots; a speaker with one test clip takes its own words one slot on (slot k from slot k+1).
  Strength ignored (1). Needs the word tables (`words`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import h5py
import numpy as np

from lipsync.core.errors import LipsyncError
from lipsync.core.io import atomic_path
from lipsync.core.logs import get_logger
from lipsync.core.progress import progress
from lipsync.core.provenance import describe
from lipsync.data import alignments
from lipsync.metrics.testset import TestSet, batches

log = get_logger(__name__)

# Documented default strengths (config: analysis.defects); the demo uses fewer.
DEFAULT_STRENGTHS = {
    "desync": [1, 2, 4, 8],
    "frozen": [1],
    "blur": [0.5, 1, 2, 4],
    "jpeg": [90, 50, 20, 5],
    "noise": [2, 5, 10, 20],
    "colour": [5, 10, 20, 40],
    "jitter": [1, 2],
    "flicker": [2, 5, 10],
    "content_swap": [1],
}
# Defects that read the GRID word alignments of the test clips.
NEEDS_WORDS = ("content_swap",)
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


def _per_sample_rng(sample: int, kind: str) -> np.random.Generator:
    # the same draw in any batch order; the kind keeps jitter's and flicker's draws apart
    return np.random.default_rng([SEED, int(sample), sum(map(ord, kind))])


def _jitter(faces: np.ndarray, pixels: float, samples: np.ndarray) -> np.ndarray:
    out = np.empty_like(faces)
    reach = int(round(pixels))
    for k, sample in enumerate(samples):
        dx, dy = _per_sample_rng(sample, "jitter").integers(-reach, reach + 1, 2)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        out[k] = cv2.warpAffine(np.ascontiguousarray(faces[k]), shift, faces.shape[2:0:-1],
                                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return out


def _flicker(faces: np.ndarray, levels: float, samples: np.ndarray) -> np.ndarray:
    out = np.empty_like(faces)
    for k, sample in enumerate(samples):
        sign = 1 if _per_sample_rng(sample, "flicker").random() < 0.5 else -1
        out[k] = np.clip(faces[k].astype(np.int16) + sign * int(round(levels)), 0, 255)
    return out


def apply(kind: str, strength: float, test_set: TestSet, start: int, stop: int,
          donors: np.ndarray | None = None) -> np.ndarray:
    """Defective faces of samples [start, stop); `donors` = content_swap.donor_crops(...)."""
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
    if kind == "jitter":
        return _jitter(real, strength, samples)
    if kind == "flicker":
        return _flicker(real, strength, samples)
    if kind == "content_swap":
        if donors is None:
            raise LipsyncError("content_swap needs the GRID word tables of the test clips")
        return _lower_half(real, test_set.read_crops(donors[start:stop]))
    raise LipsyncError(f"unknown defect kind {kind!r}; known: {', '.join(DEFAULT_STRENGTHS)}")


def make_defect_set(test_set: str | os.PathLike, kind: str, strength: float,
                    output: str | os.PathLike, *, batch_size: int = 512,
                    words: list[str | os.PathLike] | tuple = ()) -> Path:
    """Write the defect set `kind` at `strength` as a generated set (lipsync.tools.generate's format);
    `words` are the word tables (lipsync.data.alignments) content_swap reads."""
    if kind not in DEFAULT_STRENGTHS:
        raise LipsyncError(f"unknown defect kind {kind!r} (analysis.defects); known: "
                           f"{', '.join(DEFAULT_STRENGTHS)}")
    if kind in NEEDS_WORDS and not words:
        raise LipsyncError(f"defect {kind} needs the word tables of the test clips (--words "
                           "results/alignments/{speaker}.tsv)")
    with TestSet(test_set) as truth:
        donors = None
        if kind == "content_swap":
            from lipsync.analysis import content_swap

            donors = content_swap.donor_crops(truth, alignments.read_words(words))
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
                    faces[start:stop] = apply(kind, strength, truth, start, stop, donors)
                    bar.update(stop - start)
    log.info("defect set %s (%d faces) -> %s", system_name(kind, strength), n, output)
    return Path(output)
