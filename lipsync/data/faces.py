"""Face tracks for one speaker shard: detect, follow the face, interpolate, smooth, pad, crop, write HDF5.

Per-clip input problems (a missing, empty, truncated-to-nothing or undecodable video, no video
stream, a frame rate other than `video.fps`, no face, face coverage below `faces.min_coverage`)
exclude that clip: it gets a coverage row with status `excluded` and the reason, no HDF5 group,
and the shard goes on. Problems of the whole shard (unreadable manifest, missing detector
weights or dlib module, unknown detector) raise a LipsyncError.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import h5py
import numpy as np
import pandas as pd

from lipsync.core.errors import InputError
from lipsync.core.io import atomic_path, write_tsv
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults
from lipsync.core.progress import progress
from lipsync.data import decode, detectors
from lipsync.data.manifest import ClipEntry, read_shard, shard_attributes

log = get_logger(__name__)

COVERAGE_COLUMNS = ["speaker", "clip", "frames", "detected", "coverage", "status", "reason",
                    "rejected"]

_PADDING_DOC = "Margin added around the detected box, as a fraction of its {}."
# Tracking limits: on the 320 real s1 clips (OpenCV), the face box's centre moves at most 0.042 of
# its size and its size changes at most 0.062 from one frame to the next (0.11 and 0.086 over 10
# frames). dlib's boxes come in pyramid steps of 1.2: on 40 s1 clips they flip between 108 and
# 130 px (size change 0.198, centre shift up to 0.129). Fault 10's false box was 186 px on a
# ~130 px face (0.43). These limits reject nothing on those clips with either backend.
_TRACKING_DOC = ("A candidate box whose {} by more than this fraction of the last kept box's size "
                 "is rejected; a frame left without a box is filled like a missed detection "
                 "(rejections are counted in the coverage TSV).")

# Config section `faces`: the one declaration of its defaults, types and ranges.
FACES_OPTIONS = {
    "detector": Option("opencv", str, "opencv (Haar cascade), dlib (HOG, LipGAN's) or s3fd "
                       "(needs weights).", one_of=("opencv", "dlib", "s3fd")),
    "s3fd_weights": Option("results/weights/s3fd.pth", str, "S3FD weights file (detector s3fd)."),
    "s3fd_url": Option("https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
                       str, "Where rule download_s3fd fetches the S3FD weights."),
    "s3fd_sha256": Option("619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
                          str, "sha256 the downloaded S3FD weights must have (null: not "
                          "checked); the default is that of s3fd-619a316812.pth.",
                          nullable=True),
    "padding": {side: Option(0.0, float, _PADDING_DOC.format(
        "height" if side in ("top", "bottom") else "width")) for side in
        ("top", "bottom", "left", "right")},
    "tracking": {
        "max_centre_shift": Option(0.25, float, _TRACKING_DOC.format("centre moves"), above=0),
        "max_size_change": Option(0.3, float, _TRACKING_DOC.format("size changes"), above=0),
    },
    "median_frames": Option(5, int, "Running-median window over box coordinates, applied before "
                            "the moving average (1 = off): replaces a box that is off on 1 or 2 "
                            "frames; on s1 it moves the crop boxes by IoU 0.995 on average.",
                            minimum=1),
    "smoothing_frames": Option(5, int, "Moving-average window over box coordinates.", minimum=1),
    "detect_every": Option(1, int, "Detect on every k-th frame and interpolate boxes between.",
                           minimum=1),
    "min_coverage": Option(0.9, float, "A clip with a smaller fraction of frames with a face is "
                           "excluded.", minimum=0, maximum=1),
    "image_size": Option(96, int, "Side of the square face crops (px).", minimum=16),
    **detectors.BACKEND_OPTIONS,
}
FACES_DEFAULTS = defaults(FACES_OPTIONS)
# Config section `video`: GRID's frame rate and length, stated once (mel steps per frame follow).
VIDEO_OPTIONS = {
    "fps": Option(25, float, "Video frame rate; a decoded rate that differs is an error.",
                  above=0),
    "frames_per_clip": Option(75, int, "Frames of a full clip (GRID: 3 s at 25 fps).", minimum=1),
}
VIDEO_DEFAULTS = defaults(VIDEO_OPTIONS)
# A decoded rate within this of video.fps counts as equal (MPEG stores 25 as 25/1 exactly).
FPS_TOLERANCE = 1e-3


def _merged(defaults: dict, given: dict | None) -> dict:
    out = dict(defaults)
    for key, value in (given or {}).items():
        out[key] = {**defaults[key], **value} if isinstance(defaults.get(key), dict) else value
    return out


@dataclass
class ClipFaces:
    """The outcome for one clip: crops and boxes when kept, a reason when excluded."""

    entry: ClipEntry
    frames: int = 0
    detected: int = 0
    coverage: float = 0.0
    status: str = "ok"
    reason: str = ""
    rejected: int = 0
    fps: float = 0.0
    crops: np.ndarray | None = field(default=None, repr=False)
    boxes: np.ndarray | None = field(default=None, repr=False)
    detected_mask: np.ndarray | None = field(default=None, repr=False)

    def coverage_row(self) -> dict:
        return {"speaker": self.entry.speaker, "clip": self.entry.clip, "frames": self.frames,
                "detected": self.detected, "coverage": round(self.coverage, 6),
                "status": self.status, "reason": self.reason, "rejected": self.rejected}


def sampled_frames(n_frames: int, detect_every: int) -> np.ndarray:
    """Frames the detector runs on: every `detect_every`-th, plus the last so nothing is extrapolated."""
    sampled = np.arange(0, n_frames, max(1, detect_every))
    if n_frames and sampled[-1] != n_frames - 1:
        sampled = np.append(sampled, n_frames - 1)
    return sampled


def box_jumps(reference: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far each of `boxes` (K x 4+) lies from `reference` (x0 y0 x1 y1), relative to its size.

    Size is sqrt(width x height). Returns the centre distance over the reference's size and the
    size change as max(ratio, 1 / ratio) - 1, so growing and shrinking by the same factor count
    alike.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, boxes.shape[-1])[:, :4]
    size = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9, None))
    ref_size = np.sqrt(max((reference[2] - reference[0]) * (reference[3] - reference[1]), 1e-9))
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    ref_centre = (reference[:2] + reference[2:4]) / 2
    shift = np.linalg.norm(centre - ref_centre, axis=1) / ref_size
    ratio = size / ref_size
    return shift, np.maximum(ratio, 1 / ratio) - 1


def _seed(found: list[np.ndarray]) -> tuple[int, np.ndarray]:
    """Where the track starts: the sampled frame and candidate nearest the clip's median box.

    The median over frames of each frame's largest box (what a detector without tracking picks)
    ignores a false box on a minority of frames, so the track does not start on one.
    """
    largest = [detectors.largest_box(rows) for rows in found]
    usable = [i for i, box in enumerate(largest) if box is not None]
    median = np.median(np.stack([largest[i] for i in usable]), axis=0)
    best_frame, best_row, best_distance = usable[0], 0, np.inf
    for i in usable:
        shift, change = box_jumps(median, found[i])
        row = int(np.argmin(shift + change))
        if shift[row] + change[row] < best_distance:
            best_frame, best_row, best_distance = i, row, shift[row] + change[row]
    return best_frame, np.asarray(found[best_frame], np.float64)[best_row, :4].copy()


def follow_track(found: list[np.ndarray], *, max_centre_shift: float,
                 max_size_change: float) -> tuple[list[np.ndarray | None], int]:
    """One box per sampled frame from its candidate rows (`x0 y0 x1 y1 score`), following the face.

    From the seed frame (see `_seed`) the track goes forwards and backwards; on each frame it
    keeps the candidate nearest to the last kept box, provided its centre moved by at most
    `max_centre_shift` and its size changed by at most `max_size_change` (both fractions of the
    last kept box's size, see `box_jumps`). Candidates beyond either limit are off the track; a
    frame left without a candidate gets None, like a missed detection. Returns the boxes and the
    number of rejected boxes: frames whose largest candidate, the box a detector without tracking
    would crop, is off the track. Smaller stray candidates (on one sample clip the chin, on 47 of
    75 frames) are ignored without being counted: they never moved a crop.
    """
    boxes: list[np.ndarray | None] = [None] * len(found)
    if not any(len(rows) for rows in found):
        return boxes, 0
    seed, boxes[seed] = _seed(found)
    rejected = 0
    # The seed frame goes first: its seed box is nearest to itself, its other candidates are judged.
    for order in (range(seed, len(found)), range(seed - 1, -1, -1)):
        reference = boxes[seed]
        for i in order:
            rows = np.asarray(found[i], dtype=np.float64).reshape(-1, 5)
            if not len(rows):
                continue
            shift, change = box_jumps(reference, rows)
            keep = (shift <= max_centre_shift) & (change <= max_size_change)
            areas = (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])
            rejected += int(not keep[np.argmax(areas)])
            if keep.any():
                # Nearest first; among equally near candidates the detector's more confident one.
                best = np.lexsort((-rows[:, 4], np.where(keep, shift, np.inf)))[0]
                boxes[i] = reference = rows[best, :4].copy()
    return boxes, rejected


def track_boxes(sampled: np.ndarray, found: list[np.ndarray | None],
                n_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A box for every frame from detections on the `sampled` frames (None where none was found).

    Boxes are linearly interpolated between frames with a detection and held constant beyond the
    first and last one. `detected[i]` is True when frame i's box rests only on successful
    detections: it was detected itself, or lies between two neighbouring sampled frames that both
    found a face. None when no sampled frame has a face.
    """
    ok = np.array([box is not None for box in found], dtype=bool)
    if not ok.any():
        return None
    known_frames = sampled[ok]
    known_boxes = np.stack([box for box in found if box is not None])
    everything = np.arange(n_frames)
    boxes = np.stack([np.interp(everything, known_frames, known_boxes[:, c]) for c in range(4)],
                     axis=1)
    # Each frame's bracketing sampled frames: the one at or before it and the one at or after it.
    after = np.clip(np.searchsorted(sampled, everything, side="left"), 0, len(sampled) - 1)
    before = np.clip(np.searchsorted(sampled, everything, side="right") - 1, 0, len(sampled) - 1)
    detected = ok[before] & ok[after]
    return boxes, detected


def median_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred running median of each coordinate over `window` frames (fewer at the clip's ends).

    Applied before the moving average: a box that is off for fewer than half the window is
    replaced by its neighbours instead of being averaged into them.
    """
    n_frames = len(boxes)
    if window <= 1 or n_frames < 2:
        return boxes.copy()
    half = window // 2
    return np.stack([np.median(boxes[max(0, i - half):i - half + window], axis=0)
                     for i in range(n_frames)])


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of each coordinate over `window` frames (fewer at the clip's ends)."""
    n_frames = len(boxes)
    if window <= 1 or n_frames < 2:
        return boxes.copy()
    start = np.clip(np.arange(n_frames) - window // 2, 0, n_frames)
    stop = np.clip(np.arange(n_frames) - window // 2 + window, 0, n_frames)
    cumulative = np.concatenate([np.zeros((1, boxes.shape[1])), np.cumsum(boxes, axis=0)])
    return (cumulative[stop] - cumulative[start]) / (stop - start)[:, None]


def pad_boxes(boxes: np.ndarray, padding: dict, width: int, height: int) -> np.ndarray:
    """Grow boxes by fractions of their own height (top, bottom) and width (left, right), clamped."""
    x0, y0, x1, y1 = (boxes[:, c] for c in range(4))
    box_width, box_height = x1 - x0, y1 - y0
    padded = np.stack([x0 - padding["left"] * box_width, y0 - padding["top"] * box_height,
                       x1 + padding["right"] * box_width, y1 + padding["bottom"] * box_height],
                      axis=1)
    padded[:, [0, 2]] = np.clip(padded[:, [0, 2]], 0, width)
    padded[:, [1, 3]] = np.clip(padded[:, [1, 3]], 0, height)
    return padded


def crop_faces(frames: np.ndarray, boxes: np.ndarray, image_size: int) -> np.ndarray:
    """Cut each frame's box (rounded to whole pixels, at least 1 x 1) and resize with INTER_AREA."""
    height, width = frames.shape[1:3]
    crops = np.empty((len(frames), image_size, image_size, 3), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        x0, y0 = int(np.clip(round(box[0]), 0, width - 1)), int(np.clip(round(box[1]), 0, height - 1))
        x1, y1 = max(x0 + 1, int(round(box[2]))), max(y0 + 1, int(round(box[3])))
        crops[i] = cv2.resize(frame[y0:y1, x0:x1], (image_size, image_size),
                              interpolation=cv2.INTER_AREA)
    return crops


def _tracking(options: dict) -> dict:
    return {"max_centre_shift": float(options["max_centre_shift"]),
            "max_size_change": float(options["max_size_change"])}


@dataclass
class FaceTrack:
    """Where the face is in each frame of a clip."""

    boxes: np.ndarray  # float64 K x 4: the region to crop (followed, filled, smoothed, padded)
    detected: np.ndarray  # bool K, see `track_boxes`
    rejected: int  # frames whose largest candidate was off the track (see `follow_track`)


def face_track(frames: np.ndarray, detector: detectors.Detector, faces: dict) -> FaceTrack | None:
    """Detect on the sampled frames, follow the face, fill the gaps, smooth and pad the boxes.

    `faces` is a complete faces config section (FACES_DEFAULTS merged). None when no sampled frame
    has a candidate box.
    """
    sampled = sampled_frames(len(frames), int(faces["detect_every"]))
    return track_from_candidates(detector.detect(frames[sampled]), len(frames), frames.shape[2],
                                 frames.shape[1], faces)


def track_from_candidates(candidates: list, n_frames: int, width: int, height: int,
                          faces: dict) -> FaceTrack | None:
    """`face_track` from the detector's candidates on `sampled_frames(n_frames, detect_every)`:
    a video decoded in chunks (lipsync.data.stream) detects chunk by chunk, then tracks here."""
    sampled = sampled_frames(n_frames, int(faces["detect_every"]))
    found, rejected = follow_track(candidates, **_tracking(faces["tracking"]))
    tracked = track_boxes(sampled, found, n_frames)
    if tracked is None:
        return None
    boxes, detected = tracked
    boxes = median_boxes(boxes, int(faces["median_frames"]))
    boxes = smooth_boxes(boxes, int(faces["smoothing_frames"]))
    boxes = pad_boxes(boxes, faces["padding"], width, height)
    return FaceTrack(boxes, detected, rejected)


def process_clip(entry: ClipEntry, detector: detectors.Detector, faces: dict,
                 video: dict) -> ClipFaces:
    """Decode one clip and track its face; input problems give an excluded ClipFaces, not an error."""
    result = ClipFaces(entry)
    try:
        frames, fps = decode.read_video(entry.video)
    except InputError as error:
        result.status, result.reason = "excluded", str(error)
        return result
    result.frames, result.fps = len(frames), fps
    if abs(fps - float(video["fps"])) > FPS_TOLERANCE:
        result.status = "excluded"
        result.reason = f"{entry.video}: frame rate {fps:g} fps, config video.fps is {video['fps']:g}"
        return result

    track = face_track(frames, detector, faces)
    if track is None:
        result.status, result.reason = "excluded", f"{entry.video}: no face found in any frame"
        return result
    detected, result.rejected = track.detected, track.rejected
    result.detected = int(detected.sum())
    result.coverage = float(detected.mean())
    if result.coverage < float(faces["min_coverage"]):
        result.status = "excluded"
        result.reason = (f"{entry.video}: face in {result.detected} of {result.frames} frames, "
                         f"coverage {result.coverage:.3f} < faces.min_coverage {faces['min_coverage']}")
        return result

    notes = []
    if result.frames < int(video["frames_per_clip"]):
        notes.append(f"{result.frames} frames, fewer than video.frames_per_clip "
                     f"{video['frames_per_clip']}")
    if result.detected < result.frames:
        notes.append(f"{result.frames - result.detected} frames without a face filled by "
                     "interpolation")
    if result.rejected:
        notes.append(f"{result.rejected} boxes off the face track rejected")
    result.reason = "; ".join(notes)
    result.boxes = track.boxes.astype(np.float32)
    result.crops = crop_faces(frames, track.boxes, int(faces["image_size"]))
    result.detected_mask = detected
    return result


def _write_clip(handle: h5py.File, result: ClipFaces) -> None:
    group = handle.create_group(f"clips/{result.entry.clip}")
    # One chunk per clip: the packer reads clips whole; light gzip keeps a speaker near 1 GB.
    group.create_dataset("crops", data=result.crops, chunks=result.crops.shape,
                         compression="gzip", compression_opts=1)
    group.create_dataset("frames", data=np.arange(result.frames, dtype=np.int32))
    group.create_dataset("boxes", data=result.boxes)
    group.create_dataset("detected", data=result.detected_mask.astype(bool))
    group.attrs["speaker"] = result.entry.speaker
    group.attrs["fps"] = result.fps
    group.attrs["video"] = result.entry.video
    group.attrs["coverage"] = result.coverage


def extract_shard(manifest: str | os.PathLike, shard: int, shard_size: int,
                  output: str | os.PathLike, coverage: str | os.PathLike, *,
                  options: dict, threads: int = 1) -> pd.DataFrame:
    """Face crops of one manifest shard into HDF5 `output`, one coverage row per clip into `coverage`.

    `options` = {"faces": faces config section, "video": video config section}. The HDF5 file has
    `/clips/{clip}/crops` (uint8 K x S x S x 3 RGB, every decoded frame), `frames` (int32 frame
    index), `boxes` (float32 K x 4, x0 y0 x1 y1 of the region cropped: smoothed, padded, clamped),
    `detected` (bool K, see `track_boxes`), group attrs speaker and fps, and file attrs `options`
    and `provenance` (JSON). Excluded clips have no group. Returns the coverage table
    (COVERAGE_COLUMNS; `rejected` counts frames whose largest box was off the face track, see
    `follow_track`).
    """
    faces = _merged(FACES_DEFAULTS, options.get("faces"))
    video = _merged(VIDEO_DEFAULTS, options.get("video"))
    entries = read_shard(manifest, shard, shard_size)
    threads = max(1, int(threads))
    # Parallelism is across clips (the thread pool below); OpenCV's own pool would oversubscribe.
    cv2.setNumThreads(1)
    detector = detectors.build(faces)  # shard-level: missing weights stop the job here
    if faces["detector"] == "s3fd":
        import torch

        torch.set_num_threads(threads)

    rows = []
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_group("clips")
        handle.attrs.update(shard_attributes({"faces": faces, "video": video}, shard,
                                             shard_size, entries))

        def work(entry: ClipEntry) -> ClipFaces:
            return process_clip(entry, detector, faces, video)

        # Threads overlap decoding with detection (both release the GIL); map keeps clip order.
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = pool.map(work, entries) if threads > 1 else map(work, entries)
            for result in progress(results, total=len(entries), desc=f"faces shard {shard}",
                                   unit="clip"):
                if result.status == "ok":
                    _write_clip(handle, result)
                else:
                    log.warning("excluded %s: %s", result.entry.clip, result.reason)
                rows.append(result.coverage_row())
    table = pd.DataFrame(rows, columns=COVERAGE_COLUMNS)
    write_tsv(coverage, table)
    kept = int((table["status"] == "ok").sum()) if len(table) else 0
    log.info("faces shard %d: %d of %d clips kept", shard, kept, len(table))
    return table
