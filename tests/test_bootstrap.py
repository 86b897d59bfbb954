"""Bootstrap intervals over clips: they cover a known mean at about the stated rate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lipsync.metrics import bootstrap


def _clips(rng, n_clips=30, frames=20, mean=0.5):
    """Frame values with a per-clip offset (frames of a clip are correlated, as in GRID)."""
    offsets = rng.normal(0, 0.1, n_clips)
    values = (mean + offsets[:, None] + rng.normal(0, 0.05, (n_clips, frames))).ravel()
    samples = pd.DataFrame({"speaker": "s1", "clip": np.repeat([f"c{k}" for k in range(n_clips)],
                                                               frames)})
    return values, bootstrap.clip_members(samples)


def test_clip_members_group_the_samples_of_each_clip():
    samples = pd.DataFrame({"speaker": ["s1", "s1", "s2", "s1"], "clip": ["a", "a", "a", "b"]})
    members = bootstrap.clip_members(samples)
    assert [m.tolist() for m in members] == [[0, 1], [2], [3]]


def test_intervals_cover_the_true_mean_at_about_the_stated_rate():
    rng = np.random.default_rng(0)
    options = {"resamples": 300, "confidence": 0.9}
    covered = 0
    for _ in range(150):
        values, members = _clips(rng)
        low, high = bootstrap.mean_interval(values, members, options)
        covered += low <= 0.5 <= high
    # 90% nominal; the percentile bootstrap with 30 clips runs a little under it.
    assert 0.8 <= covered / 150 <= 0.97


def test_resampling_frames_instead_of_clips_would_be_far_too_narrow():
    rng = np.random.default_rng(1)
    values, members = _clips(rng)
    by_clip = np.subtract(*bootstrap.mean_interval(values, members)[::-1])
    by_frame = np.subtract(*bootstrap.mean_interval(
        values, [np.array([k]) for k in range(len(values))])[::-1])
    assert by_clip > 3 * by_frame


def test_infinite_and_missing_values_are_left_out_of_the_mean():
    values = np.array([1.0, np.inf, 3.0, np.nan, 2.0, 2.0])
    samples = pd.DataFrame({"speaker": "s1", "clip": ["a", "a", "b", "b", "c", "c"]})
    low, high = bootstrap.mean_interval(values, bootstrap.clip_members(samples))
    assert 1.0 <= low <= high <= 3.0
    assert bootstrap.describe(values)["n_infinite"] == 1
