"""PNG contact sheets: grids of face crops for a person to look at (datasets, generated faces)."""

from __future__ import annotations

import os

import cv2
import h5py
import numpy as np

from lipsync.core.errors import InputError
from lipsync.core.io import atomic_path


def contact_sheet(images, output: str | os.PathLike, *, gap: int = 2,
                  background: int = 255) -> np.ndarray:
    """Write rows of RGB uint8 images (a list of rows, each a list or array of H x W x 3 images;
    rows may differ in length) as one PNG; returns the sheet (RGB)."""
    rows = [list(row) for row in images]
    if not rows or not any(rows):
        raise ValueError("contact_sheet needs at least one image")
    height = max(image.shape[0] for row in rows for image in row)
    width = max(image.shape[1] for row in rows for image in row)
    columns = max(len(row) for row in rows)
    sheet = np.full((len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3),
                    background, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            image = np.asarray(image)
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            if image.dtype != np.uint8:  # floats in [0, 1]
                image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            sheet[top:top + image.shape[0], left:left + image.shape[1]] = image[..., :3]
    # cv2 picks the codec from the file extension and the temporary path has none: encode here
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(sheet[..., ::-1]))
    if not ok:
        raise RuntimeError(f"could not encode contact sheet for {output}")
    with atomic_path(output) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return sheet


def dataset_contact_sheet(dataset_path: str | os.PathLike, output_png: str | os.PathLike, *,
                          max_clips: int = 8, columns: int = 12) -> np.ndarray:
    """One row per clip (the first `max_clips`), columns an even subsample of its kept crops."""
    from lipsync.data.dataset import LipSyncDataset

    dataset = LipSyncDataset(dataset_path)
    try:
        with h5py.File(dataset_path, "r") as handle:
            starts = handle["clips/crop_start"][:max_clips]
            counts = handle["clips/crop_count"][:max_clips]
    except (OSError, KeyError) as error:
        raise InputError(dataset_path, f"cannot read clips of packed dataset: {error}") from error
    if len(starts) == 0:
        raise InputError(dataset_path, "dataset has no clips to show")
    rows = []
    for start, count in zip(starts, counts, strict=True):
        picks = np.unique(np.linspace(0, count - 1, min(columns, count)).round().astype(int))
        rows.append(list(dataset.read_faces(start + picks)))
    dataset.close()
    return contact_sheet(rows, output_png)
