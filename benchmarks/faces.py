"""Face-crop throughput per detector backend, and what detecting on every k-th frame costs in accuracy.

Usage: python benchmarks/faces.py [N_CLIPS]   (or LIPSYNC_BENCH_CLIPS=N; default 10)
Clips: the first N of ../shared/grid-s1 (or $LIPSYNC_GRID_S1), else ../shared/grid-samples.
Baseline: per-frame detection (detect_every=1) with the same backend, measured in the same run.
S3FD runs only when its weights exist ($LIPSYNC_S3FD_WEIGHTS or results/weights/s3fd.pth).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lipsync.data import decode, detectors, faces
from lipsync.errors import LipsyncError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def clip_paths(limit: int) -> list[Path]:
    s1 = Path(os.environ.get("LIPSYNC_GRID_S1", SHARED / "grid-s1")) / "s1"
    samples = Path(os.environ.get("LIPSYNC_GRID_SAMPLES", SHARED / "grid-samples"))
    for folder in (s1, samples):
        paths = sorted(folder.glob("*.mpg"))
        if paths:
            print(f"clips: first {min(limit, len(paths))} of {len(paths)} in {folder}")
            return paths[:limit]
    return []


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of matching rows of two K x 4 box arrays."""
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda box: (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def crop_boxes(detector, frames: np.ndarray, detect_every: int, options: dict):
    """The crop boxes `process_clip` would produce, and the crops, for one decoded clip."""
    sampled = faces.sampled_frames(len(frames), detect_every)
    tracked = faces.track_boxes(sampled, detector.detect(frames[sampled]), len(frames))
    if tracked is None:
        return None
    boxes = faces.smooth_boxes(tracked[0], options["smoothing_frames"])
    boxes = faces.pad_boxes(boxes, options["padding"], frames.shape[2], frames.shape[1])
    faces.crop_faces(frames, boxes, options["image_size"])
    return boxes


def bench_backend(name: str, clips: list[np.ndarray], options: dict) -> None:
    try:
        detector = detectors.build({**options, "detector": name})
    except LipsyncError as error:
        print(f"\n{name}: skipped ({error})")
        return
    n_crops = sum(len(frames) for frames in clips)
    print(f"\n{name} ({getattr(detector, 'device', 'cpu')}), {len(clips)} clips, {n_crops} crops")
    print(f"{'detect_every':>12} {'seconds':>8} {'crops/s':>8} {'speed-up':>8} "
          f"{'mean IoU':>8} {'min IoU':>8} {'clips':>5}")
    detector.detect(clips[0][:1])  # warm-up: lazy initialisation stays out of the timings
    baseline_boxes, baseline_seconds = None, None
    for every in (1, 2, 3, 5):
        start = time.perf_counter()
        boxes = [crop_boxes(detector, frames, every, options) for frames in clips]
        seconds = time.perf_counter() - start
        if baseline_boxes is None:
            baseline_boxes, baseline_seconds = boxes, seconds
        pairs = [(b, r) for b, r in zip(boxes, baseline_boxes, strict=True)
                 if b is not None and r is not None]
        overlaps = np.concatenate([iou(b, r) for b, r in pairs]) if pairs else np.array([np.nan])
        print(f"{every:>12} {seconds:>8.2f} {n_crops / seconds:>8.1f} "
              f"{baseline_seconds / seconds:>7.2f}x {np.nanmean(overlaps):>8.3f} "
              f"{np.nanmin(overlaps):>8.3f} {len(pairs):>5}")


def main(argv: list[str]) -> int:
    limit = int(argv[1]) if len(argv) > 1 else int(os.environ.get("LIPSYNC_BENCH_CLIPS", 10))
    paths = clip_paths(limit)
    if not paths:
        print("skipped: no GRID clips in ../shared/grid-s1 or ../shared/grid-samples")
        return 0
    cv2.setNumThreads(1)  # one core, as a preprocessing job with threads=1 runs
    start = time.perf_counter()
    clips = [decode.read_video(path)[0] for path in paths]
    decode_seconds = time.perf_counter() - start
    n_frames = sum(len(c) for c in clips)
    print(f"decode: {n_frames} frames in {decode_seconds:.2f} s "
          f"({n_frames / decode_seconds:.0f} frames/s)")
    options = faces._merged(faces.FACES_DEFAULTS, {
        "s3fd_weights": os.environ.get("LIPSYNC_S3FD_WEIGHTS",
                                       str(REPO / "results" / "weights" / "s3fd.pth"))})
    print("IoU: crop boxes (after smoothing) against detect_every=1 of the same backend")
    for name in detectors.DETECTORS:
        bench_backend(name, clips, options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
