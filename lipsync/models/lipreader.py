"""A GRID lip reader: which word of its grammar slot a speaker's mouth says, from the frames of
one aligned word segment.

GRID's fixed grammar makes lip reading a per-slot classification: each sentence is six words,
one per slot (command, colour, preposition, letter, digit, adverb), with 4, 4, 4, 25, 10 and 4
choices. The network sees `frames` grey mouth crops sampled evenly over the word's aligned span
(lipsync.data.alignments) and scores all 51 words; words outside the slot's list are masked, so
chance is 1 / (choices of the slot).

Network: a 3-D convolution over (time, height, width) as in LipNet's front end (Assael et al.
2016), two 2-D convolution blocks per frame, a temporal convolution, mean over time, and one
linear layer over the vocabulary. Its BatchNorm statistics are recomputed over the training
examples once training ends (lipsync.experts.lipread.train.recalibrate_batchnorm): the running averages
lag weights that still move fast, and on real s1 they scored 0.23 held-out accuracy in eval mode
where the same weights score 0.71 with recomputed statistics (chance 0.19). Torch-free until
`build`.
"""

from __future__ import annotations

import numpy as np

from lipsync.core.options import Option, resolve
from lipsync.data.alignments import GRAMMAR, SLOTS

OPTIONS = {
    "frames": Option(8, int, "Frames sampled evenly over a word's aligned span (GRID's words "
                     "last 1-21 frames at 25 fps, median 6).", minimum=1),
    "width": Option(1.0, float, "Channel multiplier (1.0: 32, 64, 96 channels).", above=0),
    "mouth_rows": Option([0.55, 0.95], list, "Rows [a*H, b*H) of the 96x96 crop cut as the "
                         "mouth (the mouth sits at rows ~71-87).", minimum=0, maximum=1,
                         length=2),
    "mouth_columns": Option([0.2, 0.8], list, "Columns [a*W, b*W) cut as the mouth.", minimum=0,
                            maximum=1, length=2),
    "mouth_size": Option([32, 48], list, "Mouth crops are resized to rows x columns pixels.",
                         minimum=8, length=2),
    "dropout": Option(0.2, float, "Dropout before the word layer.", minimum=0, maximum=0.9),
}
# Every word of the grammar, slot by slot; a word's index is its class.
VOCABULARY: tuple[str, ...] = tuple(word for slot in SLOTS for word in GRAMMAR[slot])
WORD_INDEX = {word: k for k, word in enumerate(VOCABULARY)}
CHANCE = {slot: 1.0 / len(GRAMMAR[slot]) for slot in SLOTS}


def resolve_options(options: dict | None) -> dict:
    return resolve(OPTIONS, options, "lipreader.model")


def slot_mask() -> np.ndarray:
    """6 x 51 booleans: which words each slot allows."""
    mask = np.zeros((len(SLOTS), len(VOCABULARY)), dtype=bool)
    for k, slot in enumerate(SLOTS):
        mask[k, [WORD_INDEX[w] for w in GRAMMAR[slot]]] = True
    return mask


def mouth_crops(faces: np.ndarray, options: dict | None = None) -> np.ndarray:
    """Grey mouth crops (uint8 B x rows x columns) of RGB face crops (uint8 B x H x W x 3)."""
    import cv2

    s = resolve_options(options)
    height, width = faces.shape[1:3]
    (top, bottom), (left, right) = s["mouth_rows"], s["mouth_columns"]
    rows = slice(int(round(top * height)), int(round(bottom * height)))
    columns = slice(int(round(left * width)), int(round(right * width)))
    size = (int(s["mouth_size"][1]), int(s["mouth_size"][0]))
    out = np.empty((len(faces), size[1], size[0]), dtype=np.uint8)
    for k, face in enumerate(faces):
        grey = cv2.cvtColor(np.ascontiguousarray(face[rows, columns]), cv2.COLOR_RGB2GRAY)
        out[k] = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return out


def word_frames(start: float, end: float, count: int, fps: float) -> np.ndarray:
    """`count` video frames evenly spaced over [start, end) seconds (centres of equal parts)."""
    times = start + (np.arange(count) + 0.5) * (end - start) / count
    return np.floor(times * fps).astype(np.int64)


def build(options: dict | None = None):
    """The lip-reading network (torch module) with resolved `options`."""
    import torch
    from torch import nn

    s = resolve_options(options)
    c1, c2, c3 = (max(4, int(round(c * s["width"]))) for c in (32, 64, 96))

    class LipReader(nn.Module):
        """mouths (B x T x rows x columns, in [0, 1]), slots (B) -> masked word logits (B x 51)."""

        def __init__(self):
            super().__init__()
            self.front = nn.Sequential(
                nn.Conv3d(1, c1, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)),
                nn.BatchNorm3d(c1), nn.ReLU(inplace=True))
            self.frame = nn.Sequential(
                nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.BatchNorm2d(c2),
                nn.ReLU(inplace=True),
                nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.BatchNorm2d(c3),
                nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
            self.temporal = nn.Sequential(nn.Conv1d(c3, c3, 3, padding=1),
                                          nn.BatchNorm1d(c3), nn.ReLU(inplace=True))
            self.dropout = nn.Dropout(s["dropout"])
            self.words = nn.Linear(c3, len(VOCABULARY))
            self.register_buffer("mask", torch.from_numpy(slot_mask()), persistent=False)

        def forward(self, mouths: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
            b, t, h, w = mouths.shape
            x = self.front((mouths.unsqueeze(1) - 0.5) / 0.25)  # B x C x T x h x w
            x = x.transpose(1, 2).reshape(b * t, x.shape[1], *x.shape[3:])
            x = self.frame(x).reshape(b, t, -1).transpose(1, 2)  # B x C x T
            x = self.temporal(x).mean(dim=2)
            logits = self.words(self.dropout(x))
            return logits.masked_fill(~self.mask[slots], float("-inf"))

    return LipReader()
