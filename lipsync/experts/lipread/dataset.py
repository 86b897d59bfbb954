"""Word-slot examples for the lip reader: for every clip of a packed split with a GRID word
alignment, six examples (one per grammar slot), each the grey mouth crops of `frames` video
frames sampled evenly over the word's aligned span (the nearest kept crop of the clip).

A split's mouth crops are small (32 x 48 grey: 1.5 kB a frame, 35 MB for 300 GRID clips), so
they are cut once into memory; the faces themselves are read batch by batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lipsync.core.errors import LipsyncError
from lipsync.core.logs import get_logger
from lipsync.data.alignments import SLOTS, Segment
from lipsync.metrics.testset import TestSet
from lipsync.models import lipreader

log = get_logger(__name__)


def nearest_crops(wanted_frames: np.ndarray, clip_frames: np.ndarray) -> np.ndarray:
    """Positions in `clip_frames` (sorted video frames of a clip's kept crops) nearest each
    wanted frame."""
    right = np.clip(np.searchsorted(clip_frames, wanted_frames), 0, len(clip_frames) - 1)
    left = np.clip(right - 1, 0, len(clip_frames) - 1)
    closer_left = np.abs(clip_frames[left] - wanted_frames) < np.abs(clip_frames[right] -
                                                                      wanted_frames)
    return np.where(closer_left, left, right)


def clip_examples(mouths: np.ndarray, clip_frames: np.ndarray, words: list[Segment],
                  frames: int, fps: float) -> np.ndarray:
    """6 x frames x rows x columns: the mouths of each word slot of one clip."""
    return np.stack([mouths[nearest_crops(lipreader.word_frames(w.start, w.end, frames, fps),
                                          clip_frames)] for w in words])


@dataclass
class ClipMouths:
    """One clip's mouth crops (uint8 n x rows x columns) and their video frames."""

    speaker: str
    clip: str
    mouths: np.ndarray
    frames: np.ndarray


def read_clip_mouths(split: str | os.PathLike, model_options: dict | None = None,
                     batch_size: int = 512) -> tuple[list[ClipMouths], float]:
    """Every clip's mouth crops of a packed split, and the split's video fps."""
    with TestSet(split) as data:
        clips = data.clip_table()
        starts, counts = data.clip_crop_ranges()
        crop_frames = data.crop_frames()
        fps = float(data.packing_config.get("video", {}).get("fps", 25.0))
        n_crops = int((starts + counts).max()) if len(starts) else 0
        parts = [lipreader.mouth_crops(data.read_crops(np.arange(a, min(a + batch_size,
                                                                      n_crops))),
                                       model_options)
                 for a in range(0, n_crops, batch_size)]
    mouths = np.concatenate(parts) if parts else np.empty((0, 1, 1), np.uint8)
    out = [ClipMouths(s, c, mouths[a:a + n], crop_frames[a:a + n])
           for s, c, a, n in zip(clips["speaker"], clips["clip"], starts, counts, strict=True)
           if n > 0]
    return out, fps


class WordSlots(Dataset):
    """(mouths float T x rows x columns in [0, 1], slot, word class) per clip and slot."""

    def __init__(self, clips: list[ClipMouths], words: dict[tuple[str, str], list[Segment]],
                 fps: float, frames: int):
        self.keys: list[tuple[str, str]] = []
        examples, labels = [], []
        without = [f"{c.speaker}/{c.clip}" for c in clips if (c.speaker, c.clip) not in words]
        if without:
            log.warning("%d clip(s) have no word alignment and are left out: %s", len(without),
                        ", ".join(without[:5]))
        for clip in clips:
            segments = words.get((clip.speaker, clip.clip))
            if segments is None:
                continue
            self.keys.append((clip.speaker, clip.clip))
            examples.append(clip_examples(clip.mouths, clip.frames, segments, frames, fps))
            labels.append([lipreader.WORD_INDEX[w.word] for w in segments])
        if not examples:
            raise LipsyncError("no clip with a GRID word alignment to read lips from (word "
                               "tables results/alignments/<speaker>.tsv)")
        self.examples = np.concatenate(examples)  # (clips * 6) x T x rows x columns
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.slots = np.tile(np.arange(len(SLOTS)), len(self.keys))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"mouths": torch.from_numpy(self.examples[index].astype(np.float32) / 255.0),
                "slot": int(self.slots[index]), "word": int(self.labels[index])}
