"""Temporal consistency: does the mouth region move from frame to frame as the real clip's does?

Frame-by-frame generators (LipGAN) flicker and shake in ways no per-frame metric sees. Both
metrics here compare each sample with the previous frame of its clip (the first sample of a clip,
or one whose previous frame is not a sample, is n/a), with no downloaded weights:

- ``temporal`` (OpenCV Farneback dense optical flow, backward: frame t to frame t-1):
  ``tof``, TecoGAN's tOF (Chu et al. 2020): mean end-point distance between the generated
  clip's flow and the real clip's, over the mouth region, in pixels; ``warp_error``: the
  generated frame t minus frame t-1 warped onto it by the REAL clip's flow, against the same
  residual of the real clip (mean absolute difference over the mouth region and RGB, grey
  levels). Flicker changes brightness that no motion explains; jitter moves the face in a way
  the real flow does not.
- ``lve`` (landmark velocity error): frame-to-frame motion of the 20 mouth landmarks, generated
  against real, mean over points, in pixels per frame; landmarks as `lmd` places them (it reads
  lmd's reference landmarks of the real faces).
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from lipsync.core.options import Option, resolve
from lipsync.metrics import landmarks
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.registry import register_metric

OPTIONS = {
    "mouth_rows": Option([0.5, 1.0], list, "The mouth region: rows [a*H, b*H) of the crop "
                         "(the lower half is what a LipGAN generator draws).", minimum=0.0,
                         maximum=1.0, length=2),
}
# Farneback settings: a 3-level pyramid and a 9-pixel window resolve the 1-5 px motions of a
# 96-pixel face (OpenCV's documented example uses 0.5, 3, 15, 3, 5, 1.2).
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 9, "iterations": 3, "poly_n": 5,
             "poly_sigma": 1.1, "flags": 0}
NO_PREVIOUS = "first frame of its clip or previous frame not a sample (no motion to compare)"


def settings(options: dict | None) -> dict:
    return resolve(OPTIONS, options, "evaluate.temporal")


def previous_samples(samples: pd.DataFrame) -> np.ndarray:
    """For each sample, the sample holding the previous video frame of its clip (-1 if none)."""
    speaker, clip = samples["speaker"].to_numpy(), samples["clip"].to_numpy()
    frame = samples["frame"].to_numpy(dtype=np.int64)
    previous = np.full(len(samples), -1, dtype=np.int64)
    index = {(s, c, f): k for k, (s, c, f) in enumerate(zip(speaker, clip, frame, strict=True))}
    for k, key in enumerate(zip(speaker, clip, frame - 1, strict=True)):
        previous[k] = index.get(key, -1)
    return previous


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def backward_flow(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """H x W x 2 flow with current(y, x) ~ previous(y + fy, x + fx)."""
    return cv2.calcOpticalFlowFarneback(_grey(current), _grey(previous), None, **FARNEBACK)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` (frame t-1) resampled onto frame t along a backward flow, float32."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    return cv2.remap(image.astype(np.float32), grid_x + flow[..., 0], grid_y + flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def pair_errors(generated: tuple[np.ndarray, np.ndarray], real: tuple[np.ndarray, np.ndarray],
                rows: slice) -> tuple[float, float]:
    """(tOF, warp error) of one frame pair (previous, current) of each clip."""
    gen_previous, gen_current = generated
    real_previous, real_current = real
    real_flow = backward_flow(real_current, real_previous)
    gen_flow = backward_flow(gen_current, gen_previous)
    tof = float(np.linalg.norm(gen_flow[rows] - real_flow[rows], axis=-1).mean())
    gen_residual = gen_current.astype(np.float32) - warp(gen_previous, real_flow)
    real_residual = real_current.astype(np.float32) - warp(real_previous, real_flow)
    return tof, float(np.abs(gen_residual[rows] - real_residual[rows]).mean())


class _Previous:
    """The frames of the samples a batch needs from earlier batches (at most one clip's end)."""

    def __init__(self, previous: np.ndarray):
        self.previous = previous
        self.kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def frames(self, batch: Batch, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(generated, real) of the previous frame of sample k, or None."""
        source = int(self.previous[k])
        if source < 0:
            return None
        if batch.start <= source < batch.stop:
            return batch.generated[source - batch.start], batch.real[source - batch.start]
        return self.kept.get(source)

    def keep(self, batch: Batch) -> None:
        # A later batch can need only samples of this one that some later sample follows.
        needed = set(self.previous[batch.stop:].tolist())
        self.kept = {k: (batch.generated[k - batch.start].copy(), batch.real[k - batch.start].copy())
                     for k in range(batch.start, batch.stop) if k in needed}


@register_metric("temporal", level="frame", options=OPTIONS,
                 description="flicker and shake of the mouth region against the real clip's "
                             "motion (optical flow)",
                 columns=(Column("tof", "TecoGAN's tOF: optical flow of the generated clip "
                                        "against the real clip's, mouth region",
                                 higher_is_better=False, unit="px", decimals=3),
                          Column("warp_error", "frame-to-frame change left after the real "
                                 "clip's motion, generated against real, mouth region",
                                 higher_is_better=False, unit="grey levels", decimals=3)))
class Temporal(Metric):
    """Optical-flow temporal error (tOF) and warping error of the mouth region."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        top, bottom = settings(options)["mouth_rows"]
        return {
            "definition": "per sample t with the previous frame t-1 of its clip: tOF = mean "
                          "||F_gen - F_real|| (Chu et al. 2020, TecoGAN); warp error = mean "
                          "|(G_t - W(G_t-1)) - (R_t - W(R_t-1))| with W the warp by F_real",
            "flow": f"OpenCV calcOpticalFlowFarneback, backward (t -> t-1), {FARNEBACK}, on "
                    "the whole crop in grey (cv2 RGB2GRAY)",
            "warp": "cv2.remap bilinear, border replicate",
            "region": f"rows [{top:g}*H, {bottom:g}*H) of the crop (the mouth region)",
            "unit": "tOF: pixels; warp error: grey levels of uint8 RGB (0-255)",
            "missing": NO_PREVIOUS,
        }

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.previous = _Previous(previous_samples(context.samples))
        self.tof: list[float] = []
        self.warp_error: list[float] = []
        self.missing = 0

    def update(self, batch: Batch) -> None:
        top, bottom = settings(self.options)["mouth_rows"]
        height = batch.real.shape[1]
        rows = slice(int(round(top * height)), max(int(round(bottom * height)), 1))
        for k in range(batch.start, batch.stop):
            before = self.previous.frames(batch, k)
            if before is None:
                self.tof.append(np.nan)
                self.warp_error.append(np.nan)
                self.missing += 1
                continue
            tof, error = pair_errors((before[0], batch.generated[k - batch.start]),
                                     (before[1], batch.real[k - batch.start]), rows)
            self.tof.append(tof)
            self.warp_error.append(error)
        self.previous.keep(batch)

    def result(self) -> Result:
        return Result({"tof": np.asarray(self.tof, np.float64),
                       "warp_error": np.asarray(self.warp_error, np.float64)},
                      missing={NO_PREVIOUS: self.missing} if self.missing else {})


def landmark_velocity_error(generated: np.ndarray, real: np.ndarray,
                            previous: np.ndarray) -> np.ndarray:
    """Per sample: mean over the mouth points of |v_gen - v_real|, v = p_t - p_previous (NaN
    where there is no previous sample or either set of points is missing)."""
    out = np.full(len(generated), np.nan)
    has = previous >= 0
    before = previous[has]
    gen_velocity = generated[has][:, landmarks.MOUTH] - generated[before][:, landmarks.MOUTH]
    real_velocity = real[has][:, landmarks.MOUTH] - real[before][:, landmarks.MOUTH]
    out[has] = np.linalg.norm(gen_velocity.astype(np.float64) - real_velocity,
                              axis=-1).mean(axis=-1)
    return out


@register_metric("lve", level="frame", options={}, reference_of="lmd",
                 description="frame-to-frame motion of the mouth landmarks against the real "
                             "clip's",
                 columns=(Column("lve", "landmark velocity error: mouth landmark motion from the "
                                        "previous frame, generated against real",
                                 higher_is_better=False, unit="px/frame", decimals=3),))
class LandmarkVelocity(Metric):
    """Mouth landmark velocity error (landmarks as lmd places them)."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return {"definition": "mean over the 20 mouth points of ||(g_t - g_t-1) - (r_t - r_t-1)||"
                              " with t-1 the previous frame of the sample's clip",
                "landmarks": "as evaluate.lmd places them (its protocol); lmd's reference "
                             "landmarks of the real faces",
                "unit": "pixels of the native crop per frame",
                "missing": f"{NO_PREVIOUS}; or landmarks missing in either frame of either clip"}

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.landmarks = landmarks.mapper(context.evaluate.get("lmd"), device=context.device,
                                          workers=context.threads)
        self.points: list[np.ndarray] = []

    def update(self, batch: Batch) -> None:
        found, _ = landmarks.checked(batch.generated, self.landmarks(batch.generated))
        self.points.append(found)

    def result(self) -> Result:
        self.landmarks.close()
        generated = (np.concatenate(self.points) if self.points
                     else np.empty((0, 68, 2), np.float32))
        previous = previous_samples(self.context.samples)
        lve = landmark_velocity_error(generated, self.context.reference["points"], previous)
        missing = {}
        if (previous < 0).any():
            missing[NO_PREVIOUS] = int((previous < 0).sum())
        unusable = int((~np.isfinite(lve) & (previous >= 0)).sum())
        if unusable:
            missing["landmarks missing in a frame of the pair"] = unusable
        return Result({"lve": lve}, missing=missing)
