"""Write RGB frames plus a mono audio track into one video file (MP4 by default) with PyAV.

The default codec, H.264 in yuv420p with AAC audio, plays in browsers and desktop players. A
lossless mode (libx264rgb at qp 0, RGB kept exactly) exists for tests and for scoring, where the
codec must not change the pixels.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lipsync.core.errors import LipsyncError
from lipsync.core.io import atomic_path
from lipsync.core.options import Option, defaults, resolve

# Config section dub.encode: one Option per key (lipsync.core.options), checked before any decode.
ENCODE_OPTIONS = {
    "codec": Option("auto", str, "video codec; auto: libx264 when PyAV's FFmpeg has it, else "
                    "mpeg4 (both play widely)"),
    "crf": Option(18, int, "x264's constant rate factor; 18 is visually-lossless-ish archival "
                  "quality; ignored by mpeg4", minimum=0, maximum=51),
    "preset": Option("medium", str, "x264 speed/size preset"),
    "lossless": Option(False, bool, "libx264rgb qp 0: exact RGB, larger files, not "
                       "browser-playable (for tests and scoring)"),
    "audio_codec": Option("aac", str, "codec of the muxed audio track"),
    "audio_bitrate": Option(128000, int, "bits per second of the audio track", minimum=8000),
    "audio_sample_rate": Option(44100, int, "sample rate of the muxed track; the model's mels "
                                "always use 16 kHz", minimum=8000, maximum=192000),
}
ENCODE_DEFAULTS = defaults(ENCODE_OPTIONS)
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
# Fallbacks in order of how widely they play.
_PLAYABLE_CODECS = ("libx264", "h264", "mpeg4")
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def resolve_encode(options: dict | None, where: str = "dub.encode") -> dict:
    """Encode options with defaults, each checked (range, codec available) before any work."""
    options = resolve(ENCODE_OPTIONS, options, where)
    if options["preset"] not in X264_PRESETS:
        raise LipsyncError(f"{where}.preset: {options['preset']!r}: must be one of "
                           f"{', '.join(X264_PRESETS)}")
    if options["audio_codec"] not in av.codecs_available:
        raise LipsyncError(f"{where}.audio_codec: {options['audio_codec']!r} is not available "
                           "in PyAV's FFmpeg")
    pick_codec(options)
    return options


def container_format(path: str | os.PathLike) -> str:
    """The container FFmpeg writes for `path`'s suffix; an unsupported suffix is an error."""
    path = Path(path)
    found = _FORMATS.get(path.suffix.lower())
    if found is None:
        raise LipsyncError(f"{path}: cannot write a {path.suffix or 'suffix-less'!r} video; "
                           f"name it with one of {', '.join(sorted(_FORMATS))}")
    return found


def pick_codec(options: dict) -> tuple[str, str, dict[str, str]]:
    """(codec name, pixel format, codec options) for the encode options."""
    if options.get("lossless"):
        if "libx264rgb" not in av.codecs_available:
            raise LipsyncError("dub.encode.lossless needs libx264rgb, which PyAV's FFmpeg lacks")
        return "libx264rgb", "rgb24", {"qp": "0", "preset": str(options["preset"])}
    codec = options["codec"]
    if codec == "auto":
        codec = next((c for c in _PLAYABLE_CODECS if c in av.codecs_available), None)
        if codec is None:
            raise LipsyncError("PyAV's FFmpeg can encode none of " + ", ".join(_PLAYABLE_CODECS))
    elif codec not in av.codecs_available:
        raise LipsyncError(f"dub.encode.codec {codec!r} is not available in PyAV's FFmpeg")
    codec_options = {}
    if codec in ("libx264", "h264"):
        codec_options = {"crf": str(options["crf"]), "preset": str(options["preset"])}
    return codec, "yuv420p", codec_options


def even_size(frame: np.ndarray) -> np.ndarray:
    """`frame` padded by one edge row/column where needed: yuv420p needs even width and height."""
    height, width = frame.shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    return np.pad(frame, pad, mode="edge") if any(p[1] for p in pad[:2]) else frame


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float,
                audio: np.ndarray | None, audio_sample_rate: int, *,
                options: dict | None = None) -> dict:
    """Encode uint8 RGB `frames` at `fps` and a mono float32 `audio` track into `path`, atomically.

    The container comes from the suffix (.mp4, .mov, .mkv). Returns what was written: codec,
    pixel format, frame count, size, and the rate as a fraction.
    """
    options = {**ENCODE_DEFAULTS, **(options or {})}
    path = Path(path)
    muxer = container_format(path)
    codec, pixel_format, codec_options = pick_codec(options)
    # 29.97 fps is 30000/1001: keep such rates exact instead of rounding to 30.
    rate = Fraction(fps).limit_denominator(1001)
    written = {"codec": codec, "pixel_format": pixel_format, "fps": f"{rate}", "frames": 0,
               "audio_codec": options["audio_codec"] if audio is not None else None}
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise LipsyncError(f"{path}: no frames to encode")
    prepare = even_size if pixel_format == "yuv420p" else np.ascontiguousarray
    first = prepare(first)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=muxer) as container:
        video = container.add_stream(codec, rate=rate, options=codec_options)
        video.height, video.width = first.shape[:2]
        video.pix_fmt = pixel_format
        written.update(width=video.width, height=video.height)
        sound = None
        if audio is not None:
            sound = container.add_stream(options["audio_codec"], rate=int(audio_sample_rate),
                                         layout="mono")
            sound.bit_rate = int(options["audio_bitrate"])
        for frame in itertools.chain([first], (prepare(f) for f in frames)):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            written["frames"] += 1
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            _encode_audio(container, sound, audio, int(audio_sample_rate))
    return written


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    samples = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
    # The AAC encoder takes fixed-size planar float frames; a resampler re-chunks for it.
    resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=sample_rate,
                                  frame_size=stream.frame_size or 1024)
    step = 1 << 14
    for start in range(0, len(samples), step):
        chunk = av.AudioFrame.from_ndarray(samples[None, start:start + step], format="fltp",
                                           layout="mono")
        chunk.sample_rate = sample_rate
        for frame in resampler.resample(chunk):
            for packet in stream.encode(frame):
                container.mux(packet)
    for frame in resampler.resample(None):
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
