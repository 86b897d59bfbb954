"""Face detector backends by name (`opencv` Haar cascade, `s3fd`): each returns the largest face box.

A detector maps a batch of RGB frames (N x H x W x 3, uint8) to one box per frame: a float array
`(x0, y0, x1, y1)` in pixels, or None where no face was found. Weights are only ever read from
local files: nothing here downloads.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lipsync.errors import LipsyncError

Box = np.ndarray  # float64 (4,): x0, y0, x1, y1


class Detector(Protocol):
    name: str

    def detect(self, frames: np.ndarray) -> list[Box | None]: ...


def largest_box(boxes: np.ndarray) -> Box | None:
    """The box of largest area among rows `x0 y0 x1 y1 ...`, or None for no rows."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return None
    boxes = boxes.reshape(len(boxes), -1)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas)), :4].copy()


class OpenCVDetector:
    """OpenCV's frontal-face Haar cascade (ships with opencv-python 4.x; needs no download)."""

    name = "opencv"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 60):
        self.cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        # A CascadeClassifier keeps scratch buffers: sharing one between threads corrupts results,
        # so each worker thread loads its own.
        self._local = threading.local()
        self._cascade()
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(str(self.cascade_path))
            if cascade.empty():
                raise LipsyncError(
                    f"{self.cascade_path}: OpenCV's Haar cascade is missing or unreadable; "
                    "opencv-python 4.x ships it (OpenCV 5 does not), see the pins in pyproject.toml")
            self._local.cascade = cascade
        return cascade

    def detect(self, frames: np.ndarray) -> list[Box | None]:
        cascade = self._cascade()
        boxes = []
        for frame in frames:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            found = cascade.detectMultiScale(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size))
            if len(found) == 0:
                boxes.append(None)
                continue
            found = np.asarray(found, dtype=np.float64)  # x, y, w, h
            found[:, 2:] += found[:, :2]
            boxes.append(largest_box(found))
        return boxes


class S3FDDetector:
    """face-alignment 1.5.0's S3FD network, loaded from a local weights file, batched on the device."""

    name = "s3fd"
    # Frames per forward pass: 360x288 frames at this batch fit easily in a few GB of GPU memory.
    batch_size = 16

    def __init__(self, weights: str, device: str | None = None, filter_threshold: float = 0.5):
        import torch
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        path = Path(weights)
        if not path.is_file():
            raise LipsyncError(
                f"{path}: S3FD weights not found (config key faces.s3fd_weights). Jobs never "
                "download; fetch them first with `lipsync download-weights --url <faces.s3fd_url> "
                f"--output {path}` (the workflow's download-weights rule does this).")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.detector = SFDDetector(self.device, path_to_detector=str(path),
                                        filter_threshold=filter_threshold)
        except (RuntimeError, OSError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as error:
            raise LipsyncError(f"{path}: not a usable S3FD state dict ({error})") from error
        self._torch = torch
        # One network shared by worker threads: forward passes go one at a time.
        self._lock = threading.Lock()

    def detect(self, frames: np.ndarray) -> list[Box | None]:
        torch = self._torch
        boxes: list[Box | None] = []
        for start in range(0, len(frames), self.batch_size):
            batch = np.ascontiguousarray(frames[start:start + self.batch_size].transpose(0, 3, 1, 2))
            with self._lock:
                # detect_from_batch expects RGB float N x 3 x H x W and converts to BGR itself.
                found = self.detector.detect_from_batch(torch.from_numpy(batch).float())
            for candidates in found:
                candidates = np.asarray(candidates, dtype=np.float64)
                boxes.append(largest_box(candidates) if candidates.size else None)
        return boxes


def _opencv(options: dict) -> Detector:
    opencv = options.get("opencv", {})
    return OpenCVDetector(scale_factor=float(opencv.get("scale_factor", 1.1)),
                          min_neighbors=int(opencv.get("min_neighbors", 5)),
                          min_size=int(opencv.get("min_size", 60)))


def _s3fd(options: dict) -> Detector:
    return S3FDDetector(options.get("s3fd_weights", "results/weights/s3fd.pth"))


DETECTORS: dict[str, Callable[[dict], Detector]] = {"opencv": _opencv, "s3fd": _s3fd}


def build(faces_options: dict) -> Detector:
    """The detector named by `faces_options["detector"]`, configured from the faces config section."""
    name = faces_options.get("detector", "opencv")
    if name not in DETECTORS:
        raise LipsyncError(f"unknown face detector {name!r} (faces.detector); "
                           f"choose one of {sorted(DETECTORS)}")
    return DETECTORS[name](faces_options)
