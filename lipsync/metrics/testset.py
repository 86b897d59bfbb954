"""Read the test set's ground-truth faces and a run's generated faces, in sample order, in batches.

A small reader of its own so the metrics depend only on the HDF5 contract in docs/ARCHITECTURE.md:
layout `raw` (uint8 N x S x S x 3 `/faces`) and layout `compact` (one lossless PNG per crop in a
variable-length uint8 `/faces`, as lipsync.data.pack writes it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lipsync.core.errors import InputError
from lipsync.data import integrity
from lipsync.data.pack import decode_png

# A batch whose crops span more than this many times its length is read crop by crop (fancy
# indexing) rather than as one contiguous slice, so a scattered batch never reads the whole file.
_MAX_SPAN_FACTOR = 4


def _open(path: str | os.PathLike, *, warn_unchecked: bool = True) -> h5py.File:
    if not Path(path).is_file():
        raise InputError(path, "file not found")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise InputError(path, f"not a readable HDF5 file ({error})") from None
    try:
        # corrupt bytes fail here as corruption, before any score or FID reference trusts them
        integrity.verify(path, handle, warn_unchecked=warn_unchecked)
    except InputError:
        handle.close()
        raise
    return handle


def _require(handle: h5py.File, path, name: str) -> h5py.Dataset:
    if name not in handle or not isinstance(handle[name], h5py.Dataset):
        raise InputError(path, f"missing dataset {name}")
    return handle[name]


def _check_faces(faces: h5py.Dataset, path) -> None:
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[-1] != 3:
        raise InputError(path, f"/faces must be uint8 N x H x W x 3 (RGB), found {faces.dtype} "
                               f"{faces.shape}")


def _is_encoded(faces: h5py.Dataset) -> bool:
    return h5py.check_vlen_dtype(faces.dtype) is not None


def _decode(encoded, crops: np.ndarray, path) -> np.ndarray:
    return np.stack([decode_png(buffer, path, crop)
                     for crop, buffer in zip(crops, encoded, strict=True)])


def read_faces(faces: h5py.Dataset, indices: np.ndarray, path=None) -> np.ndarray:
    """Rows `indices` (any order, repeats allowed) of a faces dataset, as uint8 RGB B x H x W x 3.

    Raw uint8 rows are read as one slice when the rows are close together; PNG-encoded rows
    (layout compact) are decoded.
    """
    indices = np.asarray(indices, dtype=np.int64)
    encoded = _is_encoded(faces)
    if indices.size == 0:
        return np.empty((0, *faces.shape[1:]) if not encoded else (0, 0, 0, 3), dtype=np.uint8)
    low, high = int(indices.min()), int(indices.max()) + 1
    if high - low <= _MAX_SPAN_FACTOR * indices.size:
        row_ids = np.arange(low, high)
        rows, positions = faces[low:high], indices - low
    else:
        # h5py fancy indexing wants increasing indices
        row_ids, positions = np.unique(indices, return_inverse=True)
        rows = faces[row_ids]
    if not encoded:
        return rows[positions]
    wanted, inverse = np.unique(positions, return_inverse=True)  # decode each crop once
    return _decode(rows[wanted], row_ids[wanted], path or faces.file.filename)[inverse]


def _strings(dataset: h5py.Dataset) -> np.ndarray:
    values = dataset[()]
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


class TestSet:
    """The test split `datasets/test.h5`: ground truth of sample k is faces[samples/crop[k]]."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._file = _open(path)
        layout = self._file.attrs.get("layout", "raw")
        self.layout = layout.decode() if isinstance(layout, bytes) else str(layout)
        self.faces = _require(self._file, path, "faces")
        if self.layout == "raw":
            _check_faces(self.faces, path)
        elif self.layout != "compact" or not _is_encoded(self.faces) or self.faces.ndim != 1:
            self._file.close()
            raise InputError(path, f"faces layout {self.layout!r} with /faces {self.faces.dtype} "
                                   f"{self.faces.shape} is neither raw uint8 N x H x W x 3 nor "
                                   "compact (one PNG per crop)")
        self.sample_crops = _require(self._file, path, "samples/crop")[()].astype(np.int64)
        self.reference_crops = _require(self._file, path, "samples/reference")[()].astype(np.int64)
        if self.sample_crops.size and (self.sample_crops.min() < 0
                                       or self.sample_crops.max() >= len(self.faces)):
            raise InputError(path, "samples/crop points outside /faces")

    def __enter__(self) -> TestSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def n_samples(self) -> int:
        return int(self.sample_crops.size)

    @property
    def image_shape(self) -> tuple[int, ...]:
        if self.layout == "raw":
            return tuple(self.faces.shape[1:])
        return tuple(read_faces(self.faces, np.array([0]), self.path).shape[1:])

    def ground_truth(self, start: int, stop: int) -> np.ndarray:
        """Ground-truth faces of samples [start, stop), uint8 B x H x W x 3."""
        return read_faces(self.faces, self.sample_crops[start:stop], self.path)

    def ground_truth_of(self, samples: np.ndarray) -> np.ndarray:
        return read_faces(self.faces, self.sample_crops[np.asarray(samples, dtype=np.int64)],
                          self.path)

    def references_of(self, samples: np.ndarray) -> np.ndarray:
        crops = self.reference_crops[np.asarray(samples, dtype=np.int64)]
        if (crops < 0).any():
            raise InputError(self.path, "samples/reference is -1 (not a test split)")
        return read_faces(self.faces, crops, self.path)

    def read_crops(self, crops: np.ndarray) -> np.ndarray:
        """Faces of crop indices (any order), uint8 B x H x W x 3."""
        return read_faces(self.faces, np.asarray(crops, dtype=np.int64), self.path)

    def crop_clip_index(self) -> np.ndarray:
        """The clip (row of /clips) of every crop."""
        return _require(self._file, self.path, "crops/clip_index")[()].astype(np.int64)

    def clip_crop_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(first crop, crop count) of every clip; a clip's crops are contiguous, in time order."""
        return (_require(self._file, self.path, "clips/crop_start")[()].astype(np.int64),
                _require(self._file, self.path, "clips/crop_count")[()].astype(np.int64))

    def crop_frames(self) -> np.ndarray:
        """The video frame of every crop."""
        return _require(self._file, self.path, "crops/frame")[()].astype(np.int64)

    def sample_table(self) -> pd.DataFrame:
        """One row per sample: sample index, speaker, clip, video frame of the target crop."""
        clip_index = _require(self._file, self.path, "crops/clip_index")[()].astype(np.int64)
        frames = _require(self._file, self.path, "crops/frame")[()].astype(np.int64)
        speakers = _strings(_require(self._file, self.path, "clips/speaker"))
        clips = _strings(_require(self._file, self.path, "clips/clip"))
        clip_of_sample = clip_index[self.sample_crops]
        return pd.DataFrame({
            "sample": np.arange(self.n_samples, dtype=np.int64),
            "speaker": speakers[clip_of_sample],
            "clip": clips[clip_of_sample],
            "frame": frames[self.sample_crops],
        })

    def clip_table(self) -> pd.DataFrame:
        """One row per clip of /clips: speaker, clip, mel_start, mel_count (rows of /mels)."""
        return pd.DataFrame({
            "speaker": _strings(_require(self._file, self.path, "clips/speaker")),
            "clip": _strings(_require(self._file, self.path, "clips/clip")),
            "mel_start": _require(self._file, self.path, "clips/mel_start")[()].astype(np.int64),
            "mel_count": _require(self._file, self.path, "clips/mel_count")[()].astype(np.int64),
        })

    def clip_mel(self, start: int, count: int) -> np.ndarray:
        """A clip's whole mel, float32 steps x bands: /mels rows [start, start + count)."""
        mels = _require(self._file, self.path, "mels")
        if start < 0 or start + count > mels.shape[0]:
            raise InputError(self.path, f"clip mel rows {start}..{start + count} lie outside "
                                        f"/mels ({mels.shape[0]} rows)")
        return mels[start:start + count]

    @property
    def packing_config(self) -> dict:
        """The options the split was packed with (attrs `config`: audio, video, samples)."""
        import json

        return json.loads(self._file.attrs.get("config", "{}") or "{}")


class GeneratedSet:
    """A run's output `generated/{run}.h5`: faces in the test set's sample order."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        # generated files carry checksums only once generate.py records them: no warning
        self._file = _open(path, warn_unchecked=False)
        self.faces = _require(self._file, path, "faces")
        _check_faces(self.faces, path)
        attrs = self._file.attrs
        self.run = Path(path).stem  # generated/{run}.h5: the file name is the run wildcard
        self.model = str(attrs.get("model", ""))
        self.checkpoint = str(attrs.get("checkpoint", ""))
        # Samples the generator had trained on (0 for baselines and defect sets).
        self.trained_samples = int(attrs.get("trained_samples", 0))

    def __enter__(self) -> GeneratedSet:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    @property
    def n_samples(self) -> int:
        return int(self.faces.shape[0])

    def faces_of(self, samples: np.ndarray) -> np.ndarray:
        return read_faces(self.faces, np.asarray(samples, dtype=np.int64))


def batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive batches covering range(n)."""
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)
