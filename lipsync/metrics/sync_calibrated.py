"""Sync scores a reader can interpret: where a system's LSE-D and LSE-C lie between the real clips
(the ceiling: real faces with their own audio) and the real faces driven by another clip's audio
(the floor), and the share of clips whose AV offset is within one frame.

LSE values differ between experts and pipelines, even for real video (Wav2Lip #445, #579), so the
raw numbers only mean something beside these two anchors, computed here with the same expert on
the same test set. Per clip k: d_position = (floor_D - D_k) / (floor_D - real_D) and
c_position = (C_k - floor_C) / (real_C - floor_C), with real_* and floor_* the means over the
test clips (1 = as real video, 0 = as well synced as another sentence's audio); the interval is
over clips with the anchors held fixed. The floor pairs clip k's real faces with the audio of
the next clip of the test set (k + 1, wrapping round).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lipsync.metrics.base import Column, Result
from lipsync.metrics.registry import register_metric
from lipsync.metrics.sync import LSE, LSE_OPTIONS, clip_frames, lse_of_curve
from lipsync.metrics.testset import TestSet

COLUMNS = (
    Column("lse_d_position", "LSE-D placed between the floor (another clip's audio: 0) and the "
           "real clips (1)", higher_is_better=True, decimals=3),
    Column("lse_c_position", "LSE-C placed between the floor (another clip's audio: 0) and the "
           "real clips (1)", higher_is_better=True, decimals=3),
    Column("offset_within_1", "share of clips whose AV offset is -1, 0 or +1 frames",
           higher_is_better=True, decimals=3),
)


def positions(table: pd.DataFrame, real: np.ndarray, floor: np.ndarray) -> pd.DataFrame:
    """Per-clip calibrated columns from raw lse_d, lse_c, av_offset and the (clips x 3) anchors
    (NaN where the anchors do not separate: too few clips, or the floor as good as real)."""
    real_d, real_c = np.nanmean(real[:, 0]), np.nanmean(real[:, 1])
    floor_d, floor_c = np.nanmean(floor[:, 0]), np.nanmean(floor[:, 1])
    span_d, span_c = floor_d - real_d, real_c - floor_c
    out = table[["speaker", "clip"]].copy()
    out["lse_d_position"] = ((floor_d - table["lse_d"]) / span_d if span_d > 0 else np.nan)
    out["lse_c_position"] = ((table["lse_c"] - floor_c) / span_c if span_c > 0 else np.nan)
    offsets = table["av_offset"].to_numpy(dtype=np.float64)
    out["offset_within_1"] = np.where(np.isfinite(offsets), np.abs(offsets) <= 1, np.nan)
    return out


@register_metric("lse_calibrated", level="clip", columns=COLUMNS, options=LSE_OPTIONS,
                 description="LSE-D/C placed between another clip's audio and the real clips, "
                             "and the share of clips in sync within one frame")
class CalibratedLSE(LSE):
    """LSE with its anchors: real clips (ceiling) and real faces with another clip's audio."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        record = super().protocol(options)
        record.update({
            "ceiling": "the real test clips with their own audio (reference 'real')",
            "floor": "each real test clip's faces with the next test clip's audio (k + 1, "
                     "wrapping round; reference 'floor')",
            "position": "d: (floor_D - D) / (floor_D - real_D); c: (C - floor_C) / (real_C - "
                        "floor_C); anchors are means over the test clips, held fixed in the "
                        "bootstrap over clips; n/a when the floor is not below the ceiling",
            "offset_within_1": "|AV offset| <= 1 frame, per clip",
        })
        return record

    @classmethod
    def reference(cls, test_set: TestSet, options: dict, *, device, threads: int = 1) -> dict:
        """LSE's reference (audio embeddings, real clips' scores) plus the floor's scores."""
        data = super().reference(test_set, options, device=device, threads=threads)
        expert = cls._expert(options, device)
        clips = test_set.clip_table()
        members = clip_frames(test_set.sample_table())
        floor = []
        for k, clip in clips.iterrows():
            other = (k + 1) % len(clips)
            samples, frames = members.get((clip["speaker"], clip["clip"]),
                                          (np.empty(0, np.int64), np.empty(0, np.int64)))
            if other == k or not len(samples):
                floor.append((np.nan,) * 3)
                continue
            audio = data["audio"][data["audio_clip"] == other]
            curve = cls._video_curve(expert, test_set.ground_truth_of(samples), frames, audio,
                                     options, device)
            floor.append(lse_of_curve(curve, options["offsets"]))
        return {**data, "floor": np.asarray(floor, dtype=np.float64).reshape(-1, 3)}

    def result(self) -> Result:
        # LSE's result names its table by the metric's columns: give it the raw ones for the call
        self.columns = LSE.columns
        try:
            raw = super().result()
        finally:
            del self.columns  # back to the class's calibrated columns
        real, floor = self.context.reference["real"], self.context.reference["floor"]
        table = positions(raw.values, real, floor)
        anchors = {f"{which}_{name}": float(np.nanmean(values[:, j]))
                   for which, values in (("real", real), ("floor", floor))
                   for j, name in enumerate(("lse_d", "lse_c")) if np.isfinite(values[:, j]).any()}
        raw_means = {name: float(raw.values[name].mean()) for name in ("lse_d", "lse_c")}
        return Result(table, missing=raw.missing, labels=raw.labels,
                      extra={**raw.extra, "anchors": anchors, "raw": raw_means})
