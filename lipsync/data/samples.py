"""LipGAN's training-sample rules as pure functions: which crops are kept, which mel window goes
with each crop, and how a reference crop of the same clip is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from lipsync.core.options import Option, defaults

# Config section `samples`.
OPTIONS = {
    "edge_frames": Option(4, int, "Frames skipped at each end of a clip (LipGAN keeps frames "
                          "4..71 of 75).", minimum=0),
    "mel_window": Option(27, int, "Mel steps per sample (the models take 27).", minimum=1),
    "mel_alignment": Option(
        "centered", str, "centered: the mel window is centred on the pictured frame, as at "
        "inference, and every kept crop of a full clip has one (68 per 75-frame clip). lipgan: "
        "LipGAN's training rule, a window ending near the frame, whose first samples fall "
        "outside the clip and are dropped (64 per clip).", one_of=("centered", "lipgan")),
    "min_reference_distance": Option(6, int, "Frames at least between a sample and the reference "
                                     "crop drawn from the same clip.", minimum=0),
}
DEFAULTS = defaults(OPTIONS)


def mel_steps_per_frame(sample_rate: int, hop_length: int, fps: float) -> Fraction:
    """Mel steps per video frame as an exact fraction (16000 / 200 / 25 = 16/5 = 3.2).

    Exact arithmetic keeps `int(3.2 * k)` from landing on 15.999... for some k.
    """
    return Fraction(int(sample_rate), int(hop_length)) / Fraction(fps).limit_denominator(1000)


def config_steps_per_frame(config: dict) -> Fraction:
    """Mel steps per video frame of a config holding `audio` and `video` sections (a packed
    split's stored settings); a missing key takes the default its Option table declares."""
    from lipsync.data.audio import AUDIO_DEFAULTS  # here: the rules above stay numpy-only
    from lipsync.data.faces import VIDEO_DEFAULTS

    audio = {**AUDIO_DEFAULTS, **config.get("audio", {})}
    video = {**VIDEO_DEFAULTS, **config.get("video", {})}
    return mel_steps_per_frame(audio["sample_rate"], audio["hop_length"], video["fps"])


def kept_frames(frames: np.ndarray, n_frames: int, edge_frames: int) -> np.ndarray:
    """Boolean mask over `frames` (video frame indices): True for edge_frames .. n_frames - edge_frames.

    LipGAN keeps crop i = frame i + 4, i = 0..67: frames 4..71 of a 75-frame clip (68 crops), so
    edge_frames at the start and edge_frames - 1 at the end are skipped (its 0.35 s sliding
    window needs context on each side). edge_frames = 0 keeps every frame.
    """
    frames = np.asarray(frames)
    return (frames >= edge_frames) & (frames <= n_frames - max(edge_frames, 1))


def mel_window_starts(frames: np.ndarray, *, steps_per_frame: Fraction, mel_window: int,
                      alignment: str, edge_frames: int) -> np.ndarray:
    """Start step (int64, may be negative) of the mel window for each video frame index.

    centered: s = round(steps_per_frame * f) - mel_window // 2, the window centred on the frame.
    lipgan: LipGAN's training rule s = int(steps_per_frame * (i - edge_frames)) with crop index
    i = f - edge_frames, i.e. int(3.2 * (f - 8)) by default (a window ending near the frame).
    """
    starts = []
    for f in np.asarray(frames, dtype=np.int64).tolist():
        if alignment == "centered":
            # round half up (a Fraction never hits .5 for 3.2 steps/frame, but be explicit)
            s = math.floor(steps_per_frame * f + Fraction(1, 2)) - mel_window // 2
        elif alignment == "lipgan":
            s = int(steps_per_frame * (f - 2 * edge_frames))  # int() truncates toward 0, as LipGAN
        else:
            raise ValueError(f"unknown mel_alignment {alignment!r} (expected centered or lipgan)")
        starts.append(s)
    return np.asarray(starts, dtype=np.int64)


def valid_windows(starts: np.ndarray, mel_window: int, mel_steps: int) -> np.ndarray:
    """True where the window [s, s + mel_window) lies inside [0, mel_steps]."""
    starts = np.asarray(starts)
    return (starts >= 0) & (starts + mel_window <= mel_steps)


def has_references(n_crops: int, min_distance: int) -> bool:
    """Whether every crop of a clip with n_crops crops has a crop at distance >= min_distance.

    The middle crop is the hardest; it has one exactly when n_crops >= 2 * min_distance
    (LipGAN skips clips with fewer than 12 crops for distance 6).
    """
    return n_crops >= max(1, 2 * min_distance)


def draw_references(crop: np.ndarray, n_crops: np.ndarray, min_distance: int,
                    uniforms: np.ndarray) -> np.ndarray:
    """Reference crop index (within the clip) for crop index `crop`, uniform over all j with
    |j - crop| >= min_distance, from uniforms in [0, 1). Vectorised over arrays.
    """
    crop = np.asarray(crop, dtype=np.int64)
    n_crops = np.asarray(n_crops, dtype=np.int64)
    # candidates: [0, crop - max(d, 1)] and [crop + d, n - 1]; with d = 0 the crop itself
    # belongs to the right part only, so it is not counted twice
    left = np.maximum(0, crop - max(min_distance, 1) + 1)
    right = np.maximum(0, n_crops - crop - min_distance)
    total = left + right
    if np.any(total <= 0):
        raise ValueError("a crop has no reference candidate; check has_references first")
    k = np.minimum((np.asarray(uniforms) * total).astype(np.int64), total - 1)
    return np.where(k < left, k, crop + min_distance + (k - left))


@dataclass(frozen=True)
class ClipSamples:
    """The samples of one clip: `kept` mask over its crops, and for each kept crop whether it has
    a valid mel window (`valid`) and where that window starts in the clip's mel (`mel_start`)."""

    kept: np.ndarray  # bool, one per crop in the shard
    mel_start: np.ndarray  # int64, one per kept crop
    valid: np.ndarray  # bool, one per kept crop
    dropped: int  # kept crops whose mel window falls outside the mel


def clip_samples(frames: np.ndarray, mel_steps: int, *, samples_options: dict,
                 steps_per_frame: Fraction, n_frames: int | None = None) -> ClipSamples:
    """Apply the sample rules to one clip whose crops show video frames `frames`."""
    options = {**DEFAULTS, **samples_options}
    frames = np.asarray(frames, dtype=np.int64)
    if n_frames is None:
        n_frames = int(frames.max()) + 1 if frames.size else 0
    kept = kept_frames(frames, n_frames, options["edge_frames"])
    starts = mel_window_starts(frames[kept], steps_per_frame=steps_per_frame,
                               mel_window=options["mel_window"],
                               alignment=options["mel_alignment"],
                               edge_frames=options["edge_frames"])
    valid = valid_windows(starts, options["mel_window"], mel_steps)
    return ClipSamples(kept=kept, mel_start=starts, valid=valid, dropped=int((~valid).sum()))


def mix64(*values: int | np.ndarray) -> np.ndarray:
    """A counter-based 64-bit hash (splitmix64 rounds) of integers; vectorised, platform-stable.

    Reference draws hash (seed, epoch, sample index), so a sample gets the same reference in
    any worker, any batch order and after a restart.
    """
    state = np.zeros(np.broadcast(*[np.asarray(v) for v in values]).shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for value in values:
            z = state ^ np.asarray(value).astype(np.uint64)
            z = z + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            state = z ^ (z >> np.uint64(31))
    return state


def uniforms_from_hash(hashed: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to floats in [0, 1) (the top 53 bits)."""
    return (np.asarray(hashed, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0**-53
