"""Decode GRID clips with PyAV (which ships its own FFmpeg): RGB frames and mono audio.

Audio is always resampled by FFmpeg's swresample (PyAV's `AudioResampler`), for the MP2 track
inside an .mpg and for a wav file alike, so both audio sources go through the same resampler.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lipsync.core.errors import InputError
from lipsync.core.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # uint8, N x H x W x 3, RGB
    fps: float
    audio: np.ndarray  # float32, mono, at `sample_rate`
    sample_rate: int


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a media file, turning every way it can be unusable into an InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"not a decodable media file ({error})") from error


def _stream_fps(path, stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise InputError(path, "video stream declares no frame rate")
    return float(rate)


def _video_frames(path, container):
    """Yield decoded video frames; a file cut short yields the frames that precede the cut."""
    if not container.streams.video:
        raise InputError(path, "has no video stream")
    count = 0
    try:
        for frame in container.decode(video=0):
            count += 1
            yield frame
    except av.error.FFmpegError as error:
        if count == 0:
            raise InputError(path, f"no video frame could be decoded ({error})") from error
        # A truncated download still holds usable frames: keep them; the caller sees the count.
        log.warning("%s: video decoding stopped after %d frames: %s", path, count, error)
    if count == 0:
        raise InputError(path, "no video frame could be decoded")


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames of the first video stream as uint8 N x H x W x 3 RGB, and the stream's fps."""
    with _open(path) as container:
        fps = _stream_fps(path, container.streams.video[0]) if container.streams.video else 0.0
        frames = [frame.to_ndarray(format="rgb24") for frame in _video_frames(path, container)]
    return np.stack(frames), fps


def count_video_frames(path: str | os.PathLike) -> tuple[int, float]:
    """Number of decodable video frames and the fps, without converting frames to RGB."""
    with _open(path) as container:
        fps = _stream_fps(path, container.streams.video[0]) if container.streams.video else 0.0
        count = sum(1 for _ in _video_frames(path, container))
    return count, fps


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The first audio stream of `path` (an .mpg's MP2 track or a wav), mono float32 at `sample_rate`.

    Channels are averaged, as librosa.load(mono=True) does in LipGAN's preprocessing (FFmpeg's
    own stereo-to-mono downmix would instead scale the sum by 1/sqrt(2), 3 dB louder).
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise InputError(path, "has no audio stream")
        # Planar float keeps the channels apart (channels x samples) for the averaging below.
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(audio=0):
                chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
        except av.error.FFmpegError as error:
            if not chunks:
                raise InputError(path, f"no audio could be decoded ({error})") from error
            log.warning("%s: audio decoding stopped early: %s", path, error)
        # Flush the resampler's filter delay, or the last few milliseconds would be lost.
        chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    if not chunks:
        raise InputError(path, "audio stream holds no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def read_clip(video_path: str | os.PathLike, *, audio_path: str | os.PathLike | None = None,
              sample_rate: int) -> Clip:
    """Frames and fps of `video_path`, audio from `audio_path` or else from the video's own track."""
    frames, fps = read_video(video_path)
    audio = read_audio(audio_path if audio_path is not None else video_path, sample_rate)
    return Clip(frames=frames, fps=fps, audio=audio, sample_rate=sample_rate)
