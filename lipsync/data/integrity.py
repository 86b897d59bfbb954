"""Checksums inside packed HDF5 files: per-block CRC32 of every array, recorded when a split is
packed and verified before a job trusts the file, so flipped bytes fail naming file and array.

Each dataset gets attributes `checksum` ("crc32"), `checksum_block_bytes` and `checksums` (one
uint32 per block of its contents in C order; variable-length rows enter as an 8-byte length and
their bytes). The file attribute `checksummed` lists the datasets covered. The layout itself is
untouched, so the raw layout stays contiguous and memory-mappable. HDF5's fletcher32 filter is
not used: it needs chunked storage, and HDF5 refuses filters on the variable-length PNG rows of
the compact layout, its only chunked dataset.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.logs import get_logger

log = get_logger(__name__)

ALGORITHM = "crc32"  # zlib.crc32: about 3.7 GB/s on one core here, far faster than the disk
FILE_ATTRIBUTE = "checksummed"
MIN_BLOCK_BYTES = 16 << 20
# Attributes above 64 KiB need HDF5's dense attribute storage; 8192 uint32 values stay at 32 KiB.
MAX_BLOCKS = 8192
_VLEN_ROWS_PER_READ = 4096

# (real path, size, mtime, inode) of files verified in this process: a job that opens the same
# file twice (training and validation sets, generation's two passes) reads it once.
_verified: set[tuple] = set()
_warned: set[tuple] = set()  # files without checksums: one warning per process, not per open


def block_bytes_for(nbytes: int) -> int:
    """Block size for an array of `nbytes`: 16 MiB, larger (whole MiB) past 8192 blocks."""
    per_block = -(-int(nbytes) // MAX_BLOCKS)
    return max(MIN_BLOCK_BYTES, -(-per_block // (1 << 20)) * (1 << 20))


class BlockChecksums:
    """CRC32 of each `block_bytes` block of a byte stream fed in pieces of any size."""

    def __init__(self, block_bytes: int):
        self.block_bytes = int(block_bytes)
        self.values: list[int] = []
        self._crc = 0
        self._filled = 0
        self.total_bytes = 0

    def update(self, data) -> None:
        """Append bytes (a bytes-like object or an array, taken in C order)."""
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data)
        view = memoryview(data).cast("B")
        self.total_bytes += len(view)
        while len(view):
            take = min(len(view), self.block_bytes - self._filled)
            self._crc = zlib.crc32(view[:take], self._crc)
            self._filled += take
            view = view[take:]
            if self._filled == self.block_bytes:
                self.values.append(self._crc)
                self._crc, self._filled = 0, 0

    def update_rows(self, rows: Iterable) -> None:
        """Append variable-length rows, each as its length (8 bytes) and its bytes."""
        for row in rows:
            data = row.encode() if isinstance(row, str) else row
            data = np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data
            self.update(np.int64(memoryview(data).nbytes).tobytes())
            self.update(data)

    def digest(self) -> np.ndarray:
        values = self.values + ([self._crc] if self._filled else [])
        return np.array(values, dtype=np.uint32)


def _is_vlen(dataset: h5py.Dataset) -> bool:
    if h5py.check_vlen_dtype(dataset.dtype) is not None:
        return True
    string = h5py.check_string_dtype(dataset.dtype)
    return string is not None and string.length is None


def _row_bytes(dataset: h5py.Dataset) -> int:
    return dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64))


def _size_estimate(dataset: h5py.Dataset) -> int:
    if _is_vlen(dataset):  # unknown until written: 32 KiB per row, more than a 96 px PNG crop
        return dataset.shape[0] * (32 << 10) if dataset.shape else 0
    return dataset.size * dataset.dtype.itemsize


def new_checksums(dataset: h5py.Dataset, nbytes: int | None = None) -> BlockChecksums:
    """An empty BlockChecksums with the block size this dataset gets; `nbytes` bounds what a
    variable-length dataset will hold (so its checksums fit an attribute)."""
    return BlockChecksums(block_bytes_for(_size_estimate(dataset) if nbytes is None else nbytes))


def _contiguous_offset(dataset: h5py.Dataset) -> int | None:
    if dataset.chunks is not None or _is_vlen(dataset) or dataset.size == 0:
        return None
    offset = dataset.id.get_offset()
    return None if offset is None else int(offset)


def _stream_file_range(path: str, offset: int, nbytes: int, checksums: BlockChecksums,
                       name: str) -> None:
    """Feed bytes [offset, offset + nbytes) of the file into `checksums`, reading the next block
    in a second thread while this one hashes (both release the GIL): the cost is the slower of
    the disk and CRC32, not their sum."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(1) as reader:
            def read(start: int) -> bytes:
                return os.pread(fd, min(checksums.block_bytes, offset + nbytes - start), start)

            position, pending = offset, reader.submit(read, offset)
            while position < offset + nbytes:
                block = pending.result()
                if not block:
                    raise InputError(path, f"/{name} is truncated: the file ends "
                                           f"{offset + nbytes - position} bytes before it does")
                position += len(block)
                if position < offset + nbytes:
                    pending = reader.submit(read, position)
                checksums.update(block)
    finally:
        os.close(fd)


def _stream(dataset: h5py.Dataset, checksums: BlockChecksums, path: str | None = None) -> None:
    """Feed the dataset's contents into `checksums`. With `path` (a closed-for-writing file), a
    contiguous dataset is read straight from the file's bytes, block by block."""
    if dataset.shape == () or dataset.size == 0:
        if dataset.shape == ():
            checksums.update(np.asarray(dataset[()]).tobytes())
        return
    offset = _contiguous_offset(dataset) if path is not None else None
    if offset is not None:
        _stream_file_range(path, offset, dataset.size * dataset.dtype.itemsize, checksums,
                           dataset.name.lstrip("/"))
        return
    if _is_vlen(dataset):
        step = _VLEN_ROWS_PER_READ
    else:
        step = max(1, checksums.block_bytes // max(_row_bytes(dataset), 1))
    for start in range(0, dataset.shape[0], step):
        rows = dataset[start:start + step]
        if _is_vlen(dataset):
            checksums.update_rows(rows)
        else:
            checksums.update(rows)


def record(dataset: h5py.Dataset, checksums: BlockChecksums | None = None) -> None:
    """Store the checksums of `dataset` in its attributes (computed from its contents unless
    `checksums` was fed the same bytes while the dataset was written)."""
    if checksums is None:
        checksums = new_checksums(dataset)
        _stream(dataset, checksums)
    digest = checksums.digest()
    if len(digest) > 2 * MAX_BLOCKS:  # HDF5 would refuse the attribute with a vaguer message
        raise LipsyncError(f"{dataset.file.filename}: /{dataset.name.lstrip('/')} holds "
                           f"{checksums.total_bytes} bytes, more than new_checksums(nbytes=) "
                           "allowed for: its checksums do not fit an attribute")
    dataset.attrs["checksum"] = ALGORITHM
    dataset.attrs["checksum_block_bytes"] = np.int64(checksums.block_bytes)
    dataset.attrs["checksums"] = digest


def record_all(handle: h5py.File, streamed: dict[str, BlockChecksums] | None = None) -> None:
    """Checksum every dataset of an open, writable file and list them in `checksummed`.

    `streamed` maps dataset names to checksums computed while writing (what the packer does for
    /faces and /mels, so they are not read back); the rest are read back here.
    """
    streamed = streamed or {}
    names: list[str] = []
    handle.visititems(lambda name, item: names.append(name)
                      if isinstance(item, h5py.Dataset) else None)
    for name in names:
        record(handle[name], streamed.get(name))
    handle.attrs[FILE_ATTRIBUTE] = json.dumps(sorted(names))


def _rows_of_bytes(dataset: h5py.Dataset, start: int, stop: int) -> str:
    if _is_vlen(dataset) or not dataset.shape:
        return ""
    row = max(_row_bytes(dataset), 1)
    return f", rows {start // row}-{min(-(-stop // row), dataset.shape[0]) - 1}"


def verify_dataset(path: str, dataset: h5py.Dataset) -> None:
    """InputError naming the file and the array if its contents do not match its checksums."""
    name = dataset.name.lstrip("/")
    try:
        algorithm = dataset.attrs["checksum"]
        block_bytes = int(dataset.attrs["checksum_block_bytes"])
        expected = np.asarray(dataset.attrs["checksums"], dtype=np.uint32).reshape(-1)
    except KeyError:
        raise InputError(path, f"/{name} has no checksums although the file lists it as "
                               "checksummed: corrupt attributes?") from None
    algorithm = algorithm.decode() if isinstance(algorithm, bytes) else str(algorithm)
    if algorithm != ALGORITHM:
        raise InputError(path, f"/{name}: unknown checksum algorithm {algorithm!r}")
    checksums = BlockChecksums(block_bytes)
    try:
        _stream(dataset, checksums, path)
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise InputError(path, f"/{name} is corrupt: HDF5 cannot read it ({error})") from None
    actual = checksums.digest()
    if actual.shape != expected.shape:
        raise InputError(path, f"/{name} is corrupt: {len(actual)} checksum blocks, "
                               f"{len(expected)} recorded when it was packed")
    bad = np.flatnonzero(actual != expected)
    if bad.size:
        start = int(bad[0]) * block_bytes
        stop = min(start + block_bytes, checksums.total_bytes)
        raise InputError(
            path, f"/{name} is corrupt: {bad.size} of {len(expected)} blocks differ from the "
                  f"checksums recorded when it was written (first: bytes {start}-{stop - 1}"
                  f"{_rows_of_bytes(dataset, start, stop)}); repack it from the shards or "
                  "restore an intact copy")


def verify(path: str | os.PathLike, handle: h5py.File | None = None, *,
           warn_unchecked: bool = True) -> bool:
    """Check every checksummed dataset of the file at `path` (InputError on a mismatch).

    Returns False, logging a warning unless `warn_unchecked` is False, for a file without
    checksums (packed before they were recorded); such a file is opened, not refused.
    """
    path = os.fspath(path)
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _verified:
        return True
    own = handle is None
    if own:
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise InputError(path, f"not a readable HDF5 file ({error})") from None
    try:
        listed = handle.attrs.get(FILE_ATTRIBUTE)
        if listed is None:
            if warn_unchecked and key not in _warned:
                _warned.add(key)
                log.warning("%s has no checksums (written before they were recorded): "
                            "corrupt bytes inside it would go unnoticed; repack it to add them",
                            path)
            return False
        try:
            names = json.loads(listed)
        except ValueError:
            raise InputError(path, f"attribute {FILE_ATTRIBUTE} is corrupt") from None
        for name in names:
            if name not in handle or not isinstance(handle[name], h5py.Dataset):
                raise InputError(path, f"/{name} is listed as checksummed but missing")
            verify_dataset(path, handle[name])
    finally:
        if own:
            handle.close()
    _verified.add(key)
    return True
