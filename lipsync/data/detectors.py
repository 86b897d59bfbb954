"""Face detector backends by name (`opencv` Haar cascade, `dlib` HOG, `s3fd`): candidate boxes per frame.

A detector maps a batch of RGB frames (N x H x W x 3, uint8) to one candidate array per frame:
float64 rows `x0 y0 x1 y1 score` in pixels (K x 5, K = 0 where nothing was found). Scores are the
backend's own confidence (Haar: neighbour count; dlib: SVM margin; S3FD: probability) and are only
compared within a frame. Choosing among candidates is the tracker's job (`lipsync.data.faces`).
Weights are only ever read from local files: nothing here downloads.
"""

from __future__ import annotations

import pickle
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lipsync.core.errors import LipsyncError
from lipsync.core.options import Option, defaults

Box = np.ndarray  # float64 (4,): x0, y0, x1, y1
Candidates = np.ndarray  # float64 (K, 5): x0, y0, x1, y1, score

NO_CANDIDATES = np.zeros((0, 5))

# Each backend's options (config keys faces.opencv.*, faces.dlib.*); faces.FACES_OPTIONS nests
# them.
BACKEND_OPTIONS = {
    "opencv": {
        "scale_factor": Option(1.1, float, "Haar cascade image-pyramid step.", above=1),
        "min_neighbors": Option(5, int, "Overlapping detections a face needs.", minimum=0),
        "min_size": Option(60, int, "Smallest face searched (px).", minimum=1),
    },
    "dlib": {
        "upsample": Option(1, int, "Times the frame is upsampled before detection (LipGAN's "
                           "preprocess.py: detector(gray, 1); 0 is 4x faster and finds faces "
                           "from about 80 px).", minimum=0),
        "adjust_threshold": Option(0.0, float, "Added to the SVM's detection threshold (negative "
                                   "finds more faces); 0 is dlib's own default."),
    },
}
BACKEND_DEFAULTS = defaults(BACKEND_OPTIONS)


class Detector(Protocol):
    name: str

    def detect(self, frames: np.ndarray) -> list[Candidates]: ...


def candidates(boxes: np.ndarray, scores: np.ndarray | None = None) -> Candidates:
    """Rows `x0 y0 x1 y1 score` from K x 4 boxes and K scores (score 1 when none are given)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
    return np.column_stack([boxes, scores]) if len(boxes) else NO_CANDIDATES.copy()


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

    def __init__(self, scale_factor: float, min_neighbors: int, min_size: int):
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

    def detect(self, frames: np.ndarray) -> list[Candidates]:
        cascade = self._cascade()
        found = []
        for frame in frames:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            # detectMultiScale2 gives the same boxes as detectMultiScale plus each box's
            # neighbour count, the cascade's own measure of confidence.
            boxes, neighbours = cascade.detectMultiScale2(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size))
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # x, y, w, h
            boxes[:, 2:] += boxes[:, :2]
            found.append(candidates(boxes, neighbours))
        return found


class DlibDetector:
    """dlib's HOG + linear SVM frontal face detector, the one LipGAN's preprocess.py uses.

    The model is compiled into dlib (`get_frontal_face_detector`), so there is no weights file.
    LipGAN runs it on the grey image with one upsampling (`detector(gray, 1)`); so does this by
    default. The default 80 x 80 detection window finds faces from about 80 px across at
    `upsample=0` and from about 40 px at 1, four times slower.
    """

    name = "dlib"

    def __init__(self, upsample: int, adjust_threshold: float):
        try:
            import dlib
        except ImportError as error:
            raise LipsyncError(
                "faces.detector is dlib but the dlib module is not installed; install the pinned "
                "wheel with `pip install dlib-bin==20.0.1.post1` (a dependency in pyproject.toml) "
                "or choose faces.detector opencv") from error
        if int(upsample) < 0:
            raise LipsyncError(f"faces.dlib.upsample must be 0 or more, not {upsample}")
        self._dlib = dlib
        self.upsample = int(upsample)
        self.adjust_threshold = float(adjust_threshold)

    def detect(self, frames: np.ndarray) -> list[Candidates]:
        # dlib releases the GIL while it scans but keeps its image pyramid in the detector object:
        # one detector shared by two worker threads returned wrong boxes on 5-8 of 75 frames of
        # the sample clips. So a call borrows a detector no other call is using, building one
        # (about 0.4 s) only when all are busy: at most one per thread, kept for the process.
        try:
            detector = _IDLE_DLIB_DETECTORS.get_nowait()
        except queue.Empty:
            detector = self._dlib.get_frontal_face_detector()
        try:
            found = []
            for frame in frames:
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                rects, scores, _ = detector.run(gray, self.upsample, self.adjust_threshold)
                # dlib rectangles are inclusive of right and bottom; boxes here are half-open.
                boxes = [(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in rects]
                found.append(candidates(np.asarray(boxes, np.float64), scores))
            return found
        finally:
            _IDLE_DLIB_DETECTORS.put(detector)


# Built dlib detectors not in use by any call (see DlibDetector.detect); they carry no options.
_IDLE_DLIB_DETECTORS: queue.SimpleQueue = queue.SimpleQueue()


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

    def detect(self, frames: np.ndarray) -> list[Candidates]:
        torch = self._torch
        found: list[Candidates] = []
        for start in range(0, len(frames), self.batch_size):
            batch = np.ascontiguousarray(frames[start:start + self.batch_size].transpose(0, 3, 1, 2))
            with self._lock:
                # detect_from_batch expects RGB float N x 3 x H x W and converts to BGR itself.
                batch_found = self.detector.detect_from_batch(torch.from_numpy(batch).float())
            for rows in batch_found:
                rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)  # x0 y0 x1 y1 score
                found.append(candidates(rows[:, :4], rows[:, 4]))
        return found


def _backend_options(options: dict, name: str) -> dict:
    return {**BACKEND_DEFAULTS[name], **(options.get(name) or {})}


def _opencv(options: dict) -> Detector:
    opencv = _backend_options(options, "opencv")
    return OpenCVDetector(scale_factor=float(opencv["scale_factor"]),
                          min_neighbors=int(opencv["min_neighbors"]),
                          min_size=int(opencv["min_size"]))


def _dlib(options: dict) -> Detector:
    dlib_options = _backend_options(options, "dlib")
    return DlibDetector(upsample=int(dlib_options["upsample"]),
                        adjust_threshold=float(dlib_options["adjust_threshold"]))


def _s3fd(options: dict) -> Detector:
    return S3FDDetector(options.get("s3fd_weights", "results/weights/s3fd.pth"))


DETECTORS: dict[str, Callable[[dict], Detector]] = {"opencv": _opencv, "dlib": _dlib,
                                                    "s3fd": _s3fd}


def build(faces_options: dict) -> Detector:
    """The detector named by `faces_options["detector"]`, configured from the faces config section."""
    name = faces_options.get("detector", "opencv")
    if name not in DETECTORS:
        raise LipsyncError(f"unknown face detector {name!r} (faces.detector); "
                           f"choose one of {sorted(DETECTORS)}")
    return DETECTORS[name](faces_options)
