"""The torch Dataset over a packed split (datasets/{split}.h5): LipGAN training samples, read in
batches straight from a memory map of the raw layout (or decoded per crop in the loader's
workers: PNG for the compact layout, JPEG for the jpeg layout).

Images are RGB floats in [0, 1], channels first. The HDF5 file is opened lazily in each process
(DataLoader workers included), never kept open from `__init__`, which verifies its checksums and
index ranges once, so a corrupt file fails there naming the array and not in a worker.
"""

from __future__ import annotations

import json
import math
import os

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torch.utils.data import default_collate as _default_collate

from lipsync.core.errors import InputError
from lipsync.data import integrity
from lipsync.data.pack import decode_crop
from lipsync.data.samples import draw_references, mix64, uniforms_from_hash

_REQUIRED = ("faces", "mels", "crops/clip_index", "clips/crop_start", "clips/crop_count",
             "samples/crop", "samples/mel_start", "samples/reference")
# the small index arrays; /faces and /mels stay on disk
_INDEX = ("crops/clip_index", "clips/crop_start", "clips/crop_count", "samples/crop",
          "samples/mel_start", "samples/reference")


def _contiguous_location(dataset: h5py.Dataset) -> tuple[int, np.dtype, tuple] | None:
    """(byte offset, dtype, shape) of a contiguous, uncompressed, allocated dataset, else None."""
    if dataset.chunks is not None or dataset.dtype.kind not in "iuf" or dataset.size == 0:
        return None
    offset = dataset.id.get_offset()
    if offset is None:
        return None
    return int(offset), dataset.dtype, dataset.shape


def _check_index(path: str, handle: h5py.File, mel_window: int) -> None:
    """InputError naming the file and the array if an index points outside what it indexes
    (what the checksums cannot catch in a file packed before they were recorded)."""
    n_crops, n_steps = int(handle["faces"].shape[0]), int(handle["mels"].shape[0])
    n_clips = int(handle["clips/crop_start"].shape[0])
    bounds = {"samples/crop": (0, n_crops - 1, "/faces"),
              "samples/mel_start": (0, n_steps - mel_window, "/mels (with the mel window)"),
              "samples/reference": (-1, n_crops - 1, "/faces"),
              "crops/clip_index": (0, n_clips - 1, "/clips"),
              "clips/crop_start": (0, n_crops - 1, "/faces")}
    for name, (low, high, target) in bounds.items():
        values = handle[name][()]
        if values.size and (values.min() < low or values.max() > high):
            raise InputError(path, f"/{name} is corrupt: values {values.min()}..{values.max()} "
                                   f"point outside {target} (valid {low}..{high})")
    ends = handle["clips/crop_start"][()] + handle["clips/crop_count"][()]
    if ends.size and (ends.max() > n_crops or handle["clips/crop_count"][()].min() < 0):
        raise InputError(path, f"/clips/crop_count is corrupt: clips end past /faces "
                               f"({ends.max()} > {n_crops} crops)")


def _empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, directly in shared memory, as
    torch's default_collate does: the batch then crosses to the main process without the copy
    (and page faults) of moving it there afterwards, which halves the cost per batch."""
    if get_worker_info() is not None:
        try:
            itemsize = torch.empty(0, dtype=dtype).element_size()
            storage = torch.UntypedStorage._new_shared(math.prod(shape) * itemsize)
            return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        except (AttributeError, RuntimeError):  # private API: fall back to a plain tensor
            pass
    return torch.empty(shape, dtype=dtype)


def mask_lower_half(images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The masked target the generator sees: rows S//2.. of ... x S x S images set to 0.

    The one masking rule of the package. Written into `out` when given (no extra copy), else
    into a copy of `images`.
    """
    half = images.shape[-2] // 2
    if out is None:
        out = images.clone()
    else:
        out[..., :half, :] = images[..., :half, :]
    out[..., half:, :] = 0
    return out


def model_inputs(batch: dict, device: torch.device | str) -> dict[str, torch.Tensor]:
    """A batch of either form (float32 items, or `uint8=True` items) as float32 model inputs on
    `device`. uint8 crops cross to the device as bytes and are scaled and masked there, which keeps
    a data loader's per-batch work and inter-process traffic four times smaller."""
    if batch["target"].dtype != torch.uint8:
        return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    target = batch["target"].to(device, non_blocking=True).float().div_(255.0)
    reference = batch["reference"].to(device, non_blocking=True).float().div_(255.0)
    return {"generator_input": torch.cat([reference, mask_lower_half(target)], dim=1),
            "mel": batch["mel"].to(device, non_blocking=True), "target": target,
            "reference": reference}


class _Batch(list):
    """What `__getitems__` returns: a list of per-sample dicts (default_collate accepts it) that
    also carries the already-stacked batch, which `collate` hands on without copying."""

    def __init__(self, items, stacked):
        super().__init__(items)
        self.stacked = stacked


def collate(batch):
    """Default-compatible collate: passes a batch from `__getitems__` through as it is, else
    falls back to torch's default_collate."""
    if isinstance(batch, _Batch):
        return batch.stacked
    if isinstance(batch, dict):  # a dataset whose __getitems__ already stacked the batch
        return batch
    return _default_collate(batch)


class LipSyncDataset(Dataset):
    """Training or test samples of a packed split.

    Item i is a dict of float32 tensors, RGB in [0, 1]: `generator_input` (6 x S x S: reference
    ++ target with rows S//2.. zeroed), `mel` (1 x n_mels x mel_window), `target` and `reference`
    (3 x S x S). With `fixed_reference` (default: when the file stores references, i.e. the test
    split) the stored reference is used; otherwise a reference is drawn per (seed, epoch, index),
    so `set_epoch` changes it reproducibly in every worker. Use `collate` as the DataLoader's
    collate_fn to skip a copy per batch. With `uint8=True` an item holds `mel` and uint8 `target`
    and `reference` only; `model_inputs` turns such a batch into the float inputs on the device.
    """

    def __init__(self, path: str | os.PathLike, *, seed: int = 0,
                 fixed_reference: bool | None = None, uint8: bool = False):
        self.path = str(path)
        self.seed = int(seed)
        self.uint8 = bool(uint8)
        self.epoch = 0
        file_size = os.path.getsize(self.path) if os.path.exists(self.path) else None
        if file_size is None:
            raise InputError(self.path, "dataset file does not exist")
        try:
            with h5py.File(self.path, "r") as handle:
                missing = [name for name in _REQUIRED if name not in handle]
                if missing:
                    raise InputError(self.path, f"not a packed dataset: lacks {missing}")
                self.layout = str(handle.attrs["layout"])
                self.image_size = int(handle.attrs["image_size"])
                self.mel_window = int(handle.attrs["mel_window"])
                self.min_reference_distance = int(handle.attrs["min_reference_distance"])
                self.config = json.loads(handle.attrs["config"])
                self.n_mels = int(handle["mels"].shape[1])
                self._length = int(handle["samples/crop"].shape[0])
                stored = bool(handle.attrs.get("fixed_references", False))
                # where memory maps can read; checked against the file size so a truncated
                # file fails here and not with a bus error in a worker
                self._locations = {}
                for name in ("faces", "mels", *_INDEX):
                    location = _contiguous_location(handle[name])
                    if location is not None:
                        offset, dtype, shape = location
                        end = offset + dtype.itemsize * int(np.prod(shape))
                        if end > file_size:
                            raise InputError(self.path, f"truncated: /{name} ends at byte {end}, "
                                                        f"file has {file_size}")
                        self._locations[name] = location
                integrity.verify(self.path, handle)
                _check_index(self.path, handle, self.mel_window)
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as error:
            raise InputError(self.path, f"cannot read packed dataset (truncated or corrupt?): "
                                        f"{error}") from error
        if fixed_reference is None:
            fixed_reference = stored
        if fixed_reference and not stored and self._length:
            raise ValueError(f"{self.path}: no stored references (only the test split has them)")
        self.fixed_reference = bool(fixed_reference)
        self._pid = None
        self._handle = None
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Draw other random references (training splits). With DataLoader workers call it before
        iterating (workers copy the dataset when an epoch's iterator starts; not persistent ones)."""
        self.epoch = int(epoch)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_pid=None, _handle=None, _arrays={})  # reopened by the next process
        return state

    def _open(self) -> None:
        """Open (or reopen after a fork) this process's file handle and memory maps."""
        if self._pid == os.getpid():
            return
        self._arrays = {}
        try:
            self._handle = h5py.File(self.path, "r")
            for name in ("faces", "mels", *_INDEX):
                if name in self._locations:
                    offset, dtype, shape = self._locations[name]
                    self._arrays[name] = np.memmap(self.path, dtype=dtype, mode="r",
                                                   offset=offset, shape=shape)
                elif name != "faces" or self.layout == "raw":
                    self._arrays[name] = self._handle[name]
        except OSError as error:
            raise InputError(self.path, f"cannot open packed dataset: {error}") from error
        self._pid = os.getpid()

    def read_faces(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB crops (n x S x S x 3) for crop indices, in the order given."""
        self._open()
        crops = np.asarray(crops, dtype=np.int64)
        unique, inverse = np.unique(crops, return_inverse=True)  # sorted: h5py needs it
        if self.layout == "raw":
            faces = self._arrays["faces"][unique]
        else:
            encoded = self._handle["faces"][unique] if len(unique) else []
            faces = np.empty((len(unique), self.image_size, self.image_size, 3), np.uint8)
            for k, buffer in enumerate(encoded):
                faces[k] = decode_crop(buffer, self.path, unique[k])
        return np.asarray(faces)[inverse.reshape(-1)]

    def read_mels(self, starts: np.ndarray) -> np.ndarray:
        """float32 mel windows (n x n_mels x mel_window) starting at absolute rows of /mels."""
        self._open()
        rows = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(self.mel_window)
        mels = self._arrays["mels"]
        if isinstance(mels, np.ndarray):
            windows = mels[rows.reshape(-1)]
        else:
            unique, inverse = np.unique(rows, return_inverse=True)
            windows = mels[unique][inverse.reshape(-1)]
        return windows.reshape(len(rows), self.mel_window, self.n_mels).transpose(0, 2, 1)

    def references(self, indices: np.ndarray) -> np.ndarray:
        """Reference crop index of each sample index (stored, or drawn for this seed and epoch)."""
        self._open()
        indices = np.asarray(indices, dtype=np.int64)
        if self.fixed_reference:
            return np.asarray(self._arrays["samples/reference"][indices], dtype=np.int64)
        crops = np.asarray(self._arrays["samples/crop"][indices], dtype=np.int64)
        clips = np.asarray(self._arrays["crops/clip_index"][crops], dtype=np.int64)
        start = np.asarray(self._arrays["clips/crop_start"][clips], dtype=np.int64)
        count = np.asarray(self._arrays["clips/crop_count"][clips], dtype=np.int64)
        uniforms = uniforms_from_hash(mix64(self.seed, self.epoch, indices))
        return start + draw_references(crops - start, count, self.min_reference_distance,
                                       uniforms)

    def __getitems__(self, indices: list[int]) -> _Batch:
        self._open()
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"sample index out of range for {len(self)} samples")
        indices = indices % max(len(self), 1)
        crops = np.asarray(self._arrays["samples/crop"][indices], dtype=np.int64)
        mel_starts = np.asarray(self._arrays["samples/mel_start"][indices], dtype=np.int64)
        references = self.references(indices)
        n = len(indices)
        size = self.image_size
        faces = torch.from_numpy(self.read_faces(np.concatenate([crops, references])))
        mel = torch.from_numpy(np.ascontiguousarray(self.read_mels(mel_starts),
                                                    dtype=np.float32)).unsqueeze(1)
        if self.uint8:
            images = _empty((2 * n, 3, size, size), torch.uint8)
            images.copy_(faces.permute(0, 3, 1, 2))
            stacked = {"mel": mel, "target": images[:n], "reference": images[n:]}
            items = [{key: value[k] for key, value in stacked.items()} for k in range(n)]
            return _Batch(items, stacked)
        images = _empty((2 * n, 3, size, size))
        images.copy_(faces.permute(0, 3, 1, 2)).div_(255.0)  # one transposing pass, then scale
        target, reference = images[:n], images[n:]
        generator_input = _empty((n, 6, size, size))
        generator_input[:, :3] = reference
        mask_lower_half(target, out=generator_input[:, 3:])
        stacked = {"generator_input": generator_input, "mel": mel, "target": target,
                   "reference": reference}
        items = [{key: value[k] for key, value in stacked.items()} for k in range(n)]
        return _Batch(items, stacked)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._pid, self._arrays = None, None, {}
