"""Video decoded in bounded chunks: what `dub` and `score-videos` read, so their peak memory does
not grow with the video's length (a 60 s 1080p video is 11 GB of RGB frames).

Two passes over the file: `track_video` detects and tracks the face chunk by chunk and keeps only
the boxes (a few numbers a frame); `frames_in_order` then decodes again and yields the frames a
caller asks for, in its order. Decoding twice costs less than holding every frame.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lipsync.data import decode, detectors
from lipsync.data import faces as face_tracks

# Frames per detector call: 16 1080p frames are 100 MB, little next to the models.
CHUNK_FRAMES = 16


@dataclass(frozen=True)
class VideoTrack:
    """What the first pass learnt about a video: its size, rate, length and face track."""

    frames: int
    fps: float
    height: int
    width: int
    track: face_tracks.FaceTrack | None  # None when no sampled frame has a face


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Each decoded frame of `path` as uint8 H x W x 3 RGB, one at a time."""
    with decode._open(path) as container:
        for frame in decode._video_frames(path, container):
            yield frame.to_ndarray(format="rgb24")


def video_fps(path: str | os.PathLike) -> float:
    """The declared frame rate of the first video stream, without decoding a frame."""
    with decode._open(path) as container:
        if not container.streams.video:
            raise decode.InputError(path, "has no video stream")
        return decode._stream_fps(path, container.streams.video[0])


def track_video(path: str | os.PathLike, detector: detectors.Detector, faces: dict
                ) -> VideoTrack:
    """Decode `path` once, detecting on every `faces.detect_every`-th frame and the last in chunks
    of CHUNK_FRAMES; the same boxes as faces.face_track on the whole decoded video."""
    every = max(1, int(faces["detect_every"]))
    candidates: list = []
    batch, filled = None, 0  # one preallocated chunk: a list then np.stack would hold it twice
    last, count = None, 0
    for index, frame in enumerate(iter_frames(path)):
        last, count = frame, index + 1
        if index % every == 0:
            if batch is None:
                batch = np.empty((CHUNK_FRAMES, *frame.shape), np.uint8)
            batch[filled], filled = frame, filled + 1
            if filled == CHUNK_FRAMES:
                candidates += detector.detect(batch)
                filled = 0
    if (count - 1) % every:  # sampled_frames adds the last frame so nothing is extrapolated
        batch[filled], filled = last, filled + 1
    if filled:
        candidates += detector.detect(batch[:filled])
    height, width = last.shape[:2]
    track = face_tracks.track_from_candidates(candidates, count, width, height, faces)
    return VideoTrack(count, video_fps(path), height, width, track)


def frames_in_order(path: str | os.PathLike, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """The frames of `path` at `indices`, in that order (repeats allowed).

    Non-decreasing indices (a video at least as long as the audio, a photo) stream in one pass
    holding one frame; any other order (the ping-pong of a video shorter than the audio) first
    spools the raw frames to a temporary file and reads them back by index, so memory stays flat.
    Indices past the last decoded frame repeat the last one (a file cut short).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) and (np.diff(indices) < 0).any():
        yield from _spooled(path, indices)
        return
    frames = iter_frames(path)
    current, position = next(frames), 0
    for wanted in indices:
        while position < wanted:
            following = next(frames, None)
            if following is None:
                break
            current, position = following, position + 1
        yield current
    frames.close()


def _spooled(path: str | os.PathLike, indices: np.ndarray) -> Iterator[np.ndarray]:
    needed = int(indices.max()) + 1
    with tempfile.TemporaryFile(prefix="lipsync-frames-") as spool:
        shape, count = None, 0
        for frame in iter_frames(path):
            if count == needed:
                break
            if shape is None:
                shape = frame.shape
            spool.write(np.ascontiguousarray(frame).tobytes())
            count += 1
        size = int(np.prod(shape))
        for wanted in indices:
            spool.seek(min(int(wanted), count - 1) * size)
            yield np.frombuffer(spool.read(size), dtype=np.uint8).reshape(shape)
