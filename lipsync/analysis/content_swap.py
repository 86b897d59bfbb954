"""The content-swap defect's donor frames: for each test sample, the crop of another sentence of
the same speaker at the same relative position in the same GRID word slot (in rhythm, wrong
words), from the word alignments (lipsync.data.alignments)."""

from __future__ import annotations

import numpy as np

from lipsync.core.errors import LipsyncError
from lipsync.core.logs import get_logger
from lipsync.data.alignments import SLOTS, Segment
from lipsync.metrics.testset import TestSet

log = get_logger(__name__)


def choose_donor(speaker: str, clip: str, clips: list[str],
                 words: dict[tuple[str, str], list[Segment]]) -> tuple[str, list[int]]:
    """(donor clip, donor slot for each slot): the same speaker's clip that differs in the most
    slots (first by name on a tie); with none, the clip itself one slot on."""
    own = [w.word for w in words[(speaker, clip)]]
    best, best_differences = "", -1
    for other in sorted(clips):
        if other == clip:
            continue
        differences = sum(a != b.word for a, b in zip(own, words[(speaker, other)], strict=True))
        if differences > best_differences:
            best, best_differences = other, differences
    if best:
        return best, list(range(len(SLOTS)))
    return clip, [(k + 1) % len(SLOTS) for k in range(len(SLOTS))]


def donor_time(seconds: float, own: list[Segment], donor: list[Segment],
               slot_map: list[int]) -> float:
    """The donor's time at the same relative position of the same word slot as `seconds`."""
    if seconds < own[0].start:  # leading silence, stretched onto the donor's
        return seconds * donor[slot_map[0]].start / max(own[0].start, 1e-6)
    if seconds >= own[-1].end:  # trailing silence, the same distance after the donor's last word
        return donor[slot_map[-1]].end + (seconds - own[-1].end)
    for slot, word in enumerate(own):
        if seconds < word.end or slot == len(own) - 1:
            position = (seconds - word.start) / max(word.end - word.start, 1e-6)
            target = donor[slot_map[slot]]
            return target.start + position * (target.end - target.start)
    raise AssertionError("unreachable")


def donor_crops(test_set: TestSet, words: dict[tuple[str, str], list[Segment]]) -> np.ndarray:
    """Crop index of each sample's donor face (the test set's crops)."""
    samples = test_set.sample_table()
    clips = test_set.clip_table()
    starts, counts = test_set.clip_crop_ranges()
    crop_frames = test_set.crop_frames()
    fps = float(test_set.packing_config.get("video", {}).get("fps", 25.0))
    missing = [f"{s}/{c}" for s, c in zip(clips["speaker"], clips["clip"], strict=True)
               if (s, c) not in words]
    if missing:
        raise LipsyncError(f"content_swap: no GRID word alignment for test clip(s) "
                           f"{', '.join(missing[:5])} (results/alignments/<speaker>.tsv)")
    row_of = {(s, c): k for k, (s, c) in enumerate(zip(clips["speaker"], clips["clip"],
                                                         strict=True))}
    by_speaker: dict[str, list[str]] = {}
    for speaker, clip in row_of:
        by_speaker.setdefault(speaker, []).append(clip)
    out = np.empty(len(samples), dtype=np.int64)
    for (speaker, clip), rows in samples.groupby(["speaker", "clip"], sort=False):
        donor, slot_map = choose_donor(speaker, clip, by_speaker[speaker], words)
        log.info("content_swap: %s/%s takes its mouth from %s/%s (slots %s)", speaker, clip,
                 speaker, donor, slot_map)
        row = row_of[(speaker, donor)]
        frames = crop_frames[starts[row]:starts[row] + counts[row]]
        for sample, frame in zip(rows["sample"], rows["frame"], strict=True):
            seconds = donor_time((frame + 0.5) / fps, words[(speaker, clip)],
                                 words[(speaker, donor)], slot_map)
            target = int(np.floor(seconds * fps))
            out[sample] = starts[row] + int(np.abs(frames - target).argmin())
    return out
