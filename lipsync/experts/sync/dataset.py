"""Windows of T consecutive kept crops and the mel steps covering them, from a packed split
(datasets/full.h5), as the SyncNet expert trains on them: in sync, or off sync by a few frames of
the same clip, or with another clip's audio.

Frame f's audio starts at mel step floor(f * steps_per_frame) (16/5 steps per 25 fps frame, the
exact fraction of lipsync.data.samples) and a window of T frames covers mel_window(T) steps, as
Wav2Lip's expert reads int(80 * f / fps). Held-out clips (`held_out_clips`) are chosen by a seeded
hash of their names, so the choice does not depend on the order or size of the split.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from fractions import Fraction

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from lipsync.core.errors import InputError
from lipsync.data import integrity
from lipsync.data.samples import config_steps_per_frame, mix64, uniforms_from_hash
from lipsync.metrics.testset import read_faces

_REQUIRED = ("faces", "mels", "clips/speaker", "clips/clip", "clips/crop_start",
             "clips/crop_count", "clips/mel_start", "clips/mel_count", "crops/frame")
# purposes of the per-item hash: label, negative kind, negative position
_LABEL, _KIND, _WHERE = 1, 2, 3


def steps_per_frame_of(handle: h5py.File) -> Fraction:
    """Mel steps per video frame of a packed split, from the settings it was packed with."""
    return config_steps_per_frame(json.loads(handle.attrs.get("config", "{}") or "{}"))


def audio_start(frame: int | np.ndarray, steps_per_frame: Fraction) -> np.ndarray:
    """First mel step (within the clip) of the audio of video frame `frame`: floor(f * spf)."""
    frames = np.atleast_1d(np.asarray(frame, dtype=np.int64))
    return np.array([math.floor(steps_per_frame * int(f)) for f in frames], dtype=np.int64)


def last_audio_frame(mel_count: int, window: int, steps_per_frame: Fraction) -> int:
    """The last video frame whose mel window [start, start + window) lies inside the clip."""
    frame = max(0, int((mel_count - window) / steps_per_frame) + 1)
    while frame >= 0 and math.floor(steps_per_frame * frame) + window > mel_count:
        frame -= 1
    return frame


def clip_key_hash(seed: int, speaker: str, clip: str) -> int:
    # crc32, not hash(): Python salts string hashes per process
    return int(mix64(seed, zlib.crc32(f"{speaker}/{clip}".encode()))[()])


def held_out_clips(keys: list[tuple[str, str]], seed: int, fraction: float, minimum: int = 2,
                   maximum: int = 200) -> set[tuple[str, str]]:
    """The clips kept out of training for validation: the round(fraction * n) clips (at least
    `minimum` while that leaves most clips to train on, at most `maximum`) of smallest
    hash(seed, speaker/clip)."""
    n = len(keys)
    count = min(max(round(fraction * n), minimum if n >= 4 * minimum else 0), maximum)
    ranked = sorted(keys, key=lambda key: clip_key_hash(seed, *key))
    return set(ranked[:count])


@dataclass(frozen=True)
class ClipIndex:
    """Where each clip of a packed split lives, and its video windows."""

    keys: list[tuple[str, str]]
    crop_start: np.ndarray
    crop_count: np.ndarray
    mel_start: np.ndarray
    mel_count: np.ndarray
    frames: np.ndarray  # video frame of every crop
    steps_per_frame: Fraction


def read_index(path: str | os.PathLike, handle: h5py.File) -> ClipIndex:
    for name in _REQUIRED:
        if name not in handle:
            raise InputError(path, f"missing dataset /{name} (not a packed split)")

    def strings(name: str) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in handle[name][()]]

    return ClipIndex(list(zip(strings("clips/speaker"), strings("clips/clip"), strict=True)),
                     handle["clips/crop_start"][()].astype(np.int64),
                     handle["clips/crop_count"][()].astype(np.int64),
                     handle["clips/mel_start"][()].astype(np.int64),
                     handle["clips/mel_count"][()].astype(np.int64),
                     handle["crops/frame"][()].astype(np.int64), steps_per_frame_of(handle))


def video_windows(index: ClipIndex, clip: int, frames: int, window: int) -> np.ndarray:
    """Crop offsets (within the clip) of windows of `frames` consecutive video frames whose
    in-sync audio window lies inside the clip's mel."""
    start, count = index.crop_start[clip], index.crop_count[clip]
    shown = index.frames[start:start + count]
    if count < frames:
        return np.empty(0, dtype=np.int64)
    consecutive = shown[frames - 1:] - shown[:count - frames + 1] == frames - 1
    last = last_audio_frame(int(index.mel_count[clip]), window, index.steps_per_frame)
    fits = shown[:count - frames + 1] <= last
    return np.flatnonzero(consecutive & fits).astype(np.int64)


class SyncWindows(Dataset):
    """Items of a packed split for the expert: dict of `faces` (uint8 T x 48 x 96 x 3: lower
    halves, time order), `mel` (float32 1 x 80 x W) and `label` (1. in sync, 0. off sync).

    `clips`: which clips (indices into /clips) to draw windows from. Labels and negatives are a
    hash of (seed, epoch, item), so they do not depend on workers, batch order or restarts.
    `fixed=True` (validation): every window twice, in sync and off sync, the same every epoch.
    """

    def __init__(self, path: str | os.PathLike, clips: list[int] | np.ndarray | None = None, *,
                 frames: int = 5, window: int = 16, seed: int = 0, min_offset: int = 3,
                 other_clip_fraction: float = 0.25, fixed: bool = False):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise InputError(self.path, "training set not found")
        with h5py.File(self.path, "r") as handle:
            integrity.verify(self.path, handle)
            self.index = read_index(self.path, handle)
        self.frames, self.window, self.seed = frames, window, seed
        self.min_offset, self.other_clip_fraction, self.fixed = (min_offset, other_clip_fraction,
                                                                 fixed)
        self.epoch = 0
        clips = np.arange(len(self.index.keys)) if clips is None else np.asarray(clips, np.int64)
        pairs = [(c, w) for c in clips.tolist()
                 for w in video_windows(self.index, c, frames, window).tolist()]
        self.items = np.array(pairs, dtype=np.int64).reshape(-1, 2)  # (clip, crop offset)
        if fixed:
            self.items = np.repeat(self.items, 2, axis=0)
        self.clips = clips
        self._handle: h5py.File | None = None
        self._handle_pid: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = 0 if self.fixed else epoch

    def _file(self) -> h5py.File:
        # opened lazily in each process: h5py handles do not survive a fork
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = h5py.File(self.path, "r")
            self._handle_pid = os.getpid()
        return self._handle

    def _uniform(self, item: int, purpose: int) -> float:
        return float(uniforms_from_hash(mix64(self.seed, self.epoch, item, purpose)))

    def label(self, item: int) -> float:
        if self.fixed:
            return float(item % 2 == 0)
        return float(self._uniform(item, _LABEL) < 0.5)

    def audio_frame(self, item: int) -> tuple[int, int]:
        """(clip, video frame) of the audio an item pairs with its faces."""
        clip, offset = (int(v) for v in self.items[item])
        frame = int(self.index.frames[self.index.crop_start[clip] + offset])
        if self.label(item) == 1.0:
            return clip, frame
        other = self._uniform(item, _KIND) < self.other_clip_fraction and len(self.clips) > 1
        if other:
            k = int(self._uniform(item, _WHERE) * (len(self.clips) - 1))
            choices = self.clips[self.clips != clip]
            clip = int(choices[min(k, len(choices) - 1)])
            last = last_audio_frame(int(self.index.mel_count[clip]), self.window,
                                    self.index.steps_per_frame)
            return clip, min(int(self._uniform(item, _WHERE + 1) * (last + 1)), last)
        last = last_audio_frame(int(self.index.mel_count[clip]), self.window,
                                self.index.steps_per_frame)
        # frames a with |a - frame| >= min_offset, uniform: [0, frame - d] and [frame + d, last]
        d = self.min_offset
        left = max(0, frame - d + 1)
        right = max(0, last - frame - d + 1)
        if left + right == 0:  # a clip too short for any offset: another window of it
            return clip, (frame + last // 2) % (last + 1)
        k = min(int(self._uniform(item, _WHERE) * (left + right)), left + right - 1)
        return clip, (k if k < left else frame + d + (k - left))

    def mel(self, clip: int, frame: int) -> np.ndarray:
        """The mel window (80 x W, float32) of the audio of `frame` in `clip`."""
        start = int(self.index.mel_start[clip]) + int(audio_start(frame,
                                                                   self.index.steps_per_frame)[0])
        return np.ascontiguousarray(self._file()["mels"][start:start + self.window].T)

    def __getitem__(self, item: int) -> dict:
        clip, offset = (int(v) for v in self.items[item])
        first = int(self.index.crop_start[clip]) + offset
        faces = read_faces(self._file()["faces"], np.arange(first, first + self.frames),
                           self.path)
        audio_clip, audio_frame = self.audio_frame(item)
        return {"faces": torch.from_numpy(np.ascontiguousarray(faces[:, faces.shape[1] // 2:])),
                "mel": torch.from_numpy(self.mel(audio_clip, audio_frame))[None],
                "label": torch.tensor(self.label(item), dtype=torch.float32)}


def expert_inputs(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor]:
    """A collated batch on `device`: faces B x 3T x 48 x 96 in [0, 1], mel B x 1 x 80 x W,
    labels B (uint8 crosses from the workers; scaled here)."""
    faces = batch["faces"].to(device, non_blocking=True)  # B x T x h x W x 3 uint8
    b, t, h, w, c = faces.shape
    faces = faces.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w).float() / 255.0
    return (faces, batch["mel"].to(device, non_blocking=True),
            batch["label"].to(device, non_blocking=True))
