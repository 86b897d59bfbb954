"""A packed split (docs/ARCHITECTURE.md layout) of synthetic talking faces, made in seconds for
tests and benchmarks of the sync expert: lipsync.data.synthetic's speakers and sentences, whose
mouth opening follows the audio envelope by construction, cropped at the known face position
(no video encoding or face detection) and with LipGAN's mels of the same audio.
"""

from __future__ import annotations

import json
import os

import cv2
import h5py
import numpy as np
import scipy.signal

from lipsync.core.io import atomic_path
from lipsync.data import integrity
from lipsync.data import synthetic as corpus
from lipsync.data.audio import AUDIO_DEFAULTS, fit_length, melspectrogram
from lipsync.data.faces import VIDEO_DEFAULTS
from lipsync.data.samples import DEFAULTS as SAMPLE_DEFAULTS

# The pipeline's defaults (video.fps, audio.sample_rate, samples.edge_frames): kept crops are
# frames 4..n-4, as the packer keeps them.
FPS = VIDEO_DEFAULTS["fps"]
SAMPLE_RATE = AUDIO_DEFAULTS["sample_rate"]
EDGE_FRAMES = SAMPLE_DEFAULTS["edge_frames"]


def synthetic_clip(speaker: str, index: int, *, seed: int = 0, n_frames: int = 75,
                   image_size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(crops uint8 n_frames x S x S x 3 RGB, mel float32 80 x steps) of one synthetic clip."""
    style = corpus.speaker_style(speaker, seed)
    names = corpus._random_clip_names(corpus._speaker_rng(seed, speaker, 1), index + 1)
    rng = corpus._speaker_rng(seed, speaker, 1000 + index)
    duration = n_frames / FPS
    utterance = corpus.speak(corpus.clip_words(names[index]), style, duration, rng)
    frames = corpus.render(style, corpus.frame_openness(utterance, FPS, n_frames), rng)
    # a square around the face, a little below its centre so the jaw stays inside
    side = 1.3 * style.face_height
    x0 = style.face_centre[0] - side / 2
    y0 = style.face_centre[1] + 0.1 * style.face_height - side / 2
    crops = np.stack([_crop(frame, x0, y0, side, image_size) for frame in frames])
    wav = scipy.signal.resample_poly(utterance.audio.astype(np.float64), SAMPLE_RATE,
                                     corpus.SAMPLE_RATE)
    wav = fit_length(wav, round(duration * SAMPLE_RATE))
    return crops, melspectrogram(wav, {"sample_rate": SAMPLE_RATE})


def _crop(frame: np.ndarray, x0: float, y0: float, side: float, size: int) -> np.ndarray:
    scale = size / side
    affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
    return cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def write_split(path: str | os.PathLike, *, speakers: tuple[str, ...] = ("s1", "s2"),
                clips_per_speaker: int = 4, seed: int = 0, n_frames: int = 75,
                split: str = "full") -> list[tuple[str, str]]:
    """Write a packed split of synthetic clips; returns its (speaker, clip) keys in order.

    Every kept crop is a sample with the centred 27-step window (the pipeline's default), and
    each sample's fixed reference is the crop 6 later in its clip (wrapping), so the same file
    serves as a training split and as a test split.
    """
    keys, crops, mels = [], [], []
    for speaker in speakers:
        for index in range(clips_per_speaker):
            clip_crops, mel = synthetic_clip(speaker, index, seed=seed, n_frames=n_frames)
            names = corpus._random_clip_names(corpus._speaker_rng(seed, speaker, 1), index + 1)
            keys.append((speaker, names[index]))
            crops.append(clip_crops[EDGE_FRAMES:n_frames - EDGE_FRAMES + 1])
            mels.append(mel.T)
    kept = n_frames - 2 * EDGE_FRAMES + 1
    n_clips = len(keys)
    frames = np.tile(np.arange(EDGE_FRAMES, EDGE_FRAMES + kept), n_clips).astype(np.int32)
    crop_start = np.arange(n_clips, dtype=np.int64) * kept
    mel_count = np.array([len(m) for m in mels], dtype=np.int64)
    mel_start = np.concatenate([[0], np.cumsum(mel_count)[:-1]]).astype(np.int64)
    sample_crop = np.arange(n_clips * kept, dtype=np.int64)
    within = sample_crop % kept
    centre = np.floor(frames * 16 / 5 + 0.5).astype(np.int64) - 13
    config = {"split": split, "audio": {"sample_rate": SAMPLE_RATE,
                                        "hop_length": AUDIO_DEFAULTS["hop_length"]},
              "video": {"fps": FPS}, "samples": {"mel_window": SAMPLE_DEFAULTS["mel_window"],
                                                 "edge_frames": EDGE_FRAMES},
              "seed": seed, "source": "lipsync.experts.sync.synthetic"}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        out["faces"] = np.concatenate(crops)
        out["mels"] = np.concatenate(mels).astype(np.float32)
        string = h5py.string_dtype()
        out.create_dataset("clips/speaker", data=np.array([s for s, _ in keys], dtype=object),
                           dtype=string)
        out.create_dataset("clips/clip", data=np.array([c for _, c in keys], dtype=object),
                           dtype=string)
        out["clips/crop_start"] = crop_start
        out["clips/crop_count"] = np.full(n_clips, kept, dtype=np.int64)
        out["clips/mel_start"] = mel_start
        out["clips/mel_count"] = mel_count
        out["clips/sample_start"] = crop_start
        out["clips/sample_count"] = np.full(n_clips, kept, dtype=np.int64)
        out["crops/clip_index"] = np.repeat(np.arange(n_clips), kept).astype(np.int32)
        out["crops/frame"] = frames
        out["samples/crop"] = sample_crop
        out["samples/mel_start"] = np.repeat(mel_start, kept) + centre
        out["samples/reference"] = sample_crop - within + (within + 6) % kept
        out.attrs.update(layout="raw", split=split, image_size=96, mel_window=27, color="RGB",
                         config=json.dumps(config, sort_keys=True))
        integrity.record_all(out)
    return keys
