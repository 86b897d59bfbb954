"""Face tracks per detector backend on real clips: coverage, crops/s on one core, rejected boxes, how
closely the backends agree, and what detecting on every k-th frame costs in accuracy.

Usage: python benchmarks/faces.py [N_CLIPS]   (or LIPSYNC_BENCH_CLIPS=N; default 10)
Clips: the first N of ../shared/grid-s1 (or $LIPSYNC_GRID_S1), else ../shared/grid-samples.
Baselines, measured in the same run: per-frame detection (detect_every=1) of the same backend for
the detect_every rows; OpenCV's crop boxes for the agreement of the other backends.
dlib runs when it is installed; S3FD only when its weights exist ($LIPSYNC_S3FD_WEIGHTS or
results/weights/s3fd.pth).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lipsync.core.errors import LipsyncError
from lipsync.data import decode, detectors, faces

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EVERY = (1, 2, 3, 5)


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


def overlap(tracks: list, reference: list) -> tuple[float, float, int]:
    """Mean and min per-frame IoU of two runs' crop boxes over clips both tracked, and their count."""
    pairs = [(t.boxes, r.boxes) for t, r in zip(tracks, reference, strict=True)
             if t is not None and r is not None]
    if not pairs:
        return float("nan"), float("nan"), 0
    values = np.concatenate([iou(t, r) for t, r in pairs])
    return float(values.mean()), float(values.min()), len(pairs)


def run(detector, clips: list[np.ndarray], options: dict, every: int):
    """Each clip's FaceTrack (None without a face) and the CPU seconds taken, cropping included.

    CPU time of this single-threaded process, not wall time, so that other jobs on a shared
    machine do not count: it is the time of one core.
    """
    options = {**options, "detect_every": every}
    start = time.process_time()
    tracks = []
    for frames in clips:
        track = faces.face_track(frames, detector, options)
        if track is not None:
            faces.crop_faces(frames, track.boxes, options["image_size"])
        tracks.append(track)
    return tracks, time.process_time() - start


def bench_backend(name: str, clips: list[np.ndarray], options: dict) -> list | None:
    """Print one row per detect_every; return the per-frame run's tracks (None when skipped)."""
    try:
        detector = detectors.build({**options, "detector": name})
    except LipsyncError as error:
        print(f"\n{name}: skipped ({error})")
        return None
    n_crops = sum(len(frames) for frames in clips)
    print(f"\n{name} ({getattr(detector, 'device', 'cpu')}), {len(clips)} clips, {n_crops} crops")
    print(f"{'detect_every':>12} {'CPU s':>8} {'crops/s':>8} {'speed-up':>8} {'mean IoU':>8} "
          f"{'min IoU':>8} {'coverage':>8} {'min cov.':>8} {'kept':>5} {'rejected':>8}")
    detector.detect(clips[0][:1])  # warm-up: lazy initialisation stays out of the timings
    baseline, baseline_seconds = None, None
    for every in EVERY:
        tracks, seconds = run(detector, clips, options, every)
        if baseline is None:
            baseline, baseline_seconds = tracks, seconds
        mean_iou, min_iou, _ = overlap(tracks, baseline)
        coverage = np.array([t.detected.mean() if t is not None else 0.0 for t in tracks])
        kept = int((coverage >= options["min_coverage"]).sum())
        rejected = sum(t.rejected for t in tracks if t is not None)
        print(f"{every:>12} {seconds:>8.2f} {n_crops / seconds:>8.1f} "
              f"{baseline_seconds / seconds:>7.2f}x {mean_iou:>8.3f} {min_iou:>8.3f} "
              f"{coverage.mean():>8.3f} {coverage.min():>8.3f} {kept:>5} {rejected:>8}")
    return baseline


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
    print("crops/s: detection, tracking, smoothing and cropping per CPU second of one core "
          "(decoding apart);")
    print("IoU: crop boxes against detect_every=1 of the same backend; coverage: fraction of "
          f"frames with a face per clip (kept: clips >= faces.min_coverage {options['min_coverage']})")
    per_frame = {name: bench_backend(name, clips, options) for name in detectors.DETECTORS}
    reference = per_frame.get("opencv")
    others = [name for name, tracks in per_frame.items() if tracks and name != "opencv"]
    if reference and others:
        print("\nagreement with opencv, per frame (detect_every=1, crop boxes)")
        print(f"{'backend':>8} {'mean IoU':>8} {'min IoU':>8} {'clips':>5}")
        for name in others:
            mean_iou, min_iou, n_clips = overlap(per_frame[name], reference)
            print(f"{name:>8} {mean_iou:>8.3f} {min_iou:>8.3f} {n_clips:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
