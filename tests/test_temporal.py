"""Temporal metrics (tOF, warping error, landmark velocity error) and the defects only time shows
(jitter, flicker, content swap), on real GRID crops: zero for the real clip, raised by each
defect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import score_all, write_generated, write_test_set
from test_landmarks import fixed_box_crops

from lipsync.analysis import content_swap, defects
from lipsync.core.errors import LipsyncError
from lipsync.data import alignments
from lipsync.metrics import temporal
from lipsync.metrics.testset import TestSet

FRAMES = 12
CLIPS = [("s1", "bbaf2n"), ("s1", "brbk7n")]
OPTIONS = {"metrics": ["temporal"], "bootstrap": {"resamples": 50}, "batch_size": 5}


@pytest.fixture(scope="module")
def real_test_set(grid_samples, tmp_path_factory):
    """Two real s1 clips, 12 frames each (frames 30-41: both speaking), one sample per frame."""
    folder = tmp_path_factory.mktemp("temporal")
    crops = np.concatenate([fixed_box_crops(grid_samples / f"{clip}.mpg", slice(30, 30 + FRAMES))
                            for _, clip in CLIPS])
    write_test_set(folder / "test.h5", faces=crops, clips=CLIPS, crops_per_clip=FRAMES)
    return folder


def _score(folder, name, faces, metrics=("temporal",)):
    write_generated(folder / f"{name}.h5", faces)
    options = {**OPTIONS, "metrics": list(metrics)}
    return score_all(folder, folder / "test.h5", folder / f"{name}.h5", options)["metrics"]


def _value(summary, metric, column):
    return summary[metric]["columns"][column]["value"]


def test_previous_sample_is_the_previous_frame_of_the_same_clip():
    samples = pd.DataFrame({"speaker": ["s1"] * 5, "clip": ["a", "a", "a", "b", "b"],
                            "frame": [4, 5, 7, 5, 6]})
    assert temporal.previous_samples(samples).tolist() == [-1, 0, -1, -1, 3]


def test_real_clip_has_no_temporal_error_and_first_frames_are_na(real_test_set):
    faces = TestSet(real_test_set / "test.h5")
    real = faces.ground_truth(0, faces.n_samples)
    faces.close()
    summary = _score(real_test_set, "real", real)
    assert _value(summary, "temporal", "tof") == pytest.approx(0.0, abs=1e-9)
    assert _value(summary, "temporal", "warp_error") == pytest.approx(0.0, abs=1e-9)
    # one first frame per clip has no previous frame
    assert summary["temporal"]["missing"] == {temporal.NO_PREVIOUS: len(CLIPS)}
    low, high = (summary["temporal"]["columns"]["tof"][k] for k in ("ci_low", "ci_high"))
    assert low == pytest.approx(0.0, abs=1e-9) and high == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("kind, strength", [("jitter", 2), ("flicker", 10)])
def test_jitter_and_flicker_raise_the_temporal_errors(real_test_set, kind, strength):
    folder = real_test_set
    output = defects.make_defect_set(folder / "test.h5", kind, strength,
                                     folder / f"defect-{kind}.h5")
    summary = score_all(folder, folder / "test.h5", output, OPTIONS)["metrics"]
    # Measured on these crops (OpenCV 4.x, x86-64): jitter 2 px: tOF 2.49 px, warp error 12.7;
    # flicker 10: tOF 0.00 px, warp error 7.27 grey levels (real: both 0). Bounds: 2.4x margin
    # or more.
    assert _value(summary, "temporal", "warp_error") > 3.0
    if kind == "jitter":
        assert _value(summary, "temporal", "tof") > 0.5


def test_jitter_shifts_whole_pixels_and_flicker_steps_brightness(real_test_set):
    folder = real_test_set
    with TestSet(folder / "test.h5") as truth:
        real = truth.ground_truth(0, 4).astype(np.int16)
        flicker = defects.apply("flicker", 5, truth, 0, 4).astype(np.int16)
        jitter = defects.apply("jitter", 1, truth, 0, 4)
    inner = (slice(10, -10), slice(10, -10))
    steps = (flicker - real)[:, inner[0], inner[1]].reshape(4, -1)
    assert set(np.unique(steps[:, 0])) <= {-5, 5}
    assert (steps == steps[:, :1]).mean() > 0.99  # one step per frame (clipping aside)
    for k in range(4):  # each jittered frame is the real one moved by at most 1 px
        best = min(np.abs(np.roll(real[k], (dy, dx), axis=(0, 1))[inner] -
                          jitter[k][inner].astype(np.int16)).mean()
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert best == 0


def test_landmark_velocity_error_is_zero_for_real_motion_and_grows_with_jitter(real_test_set):
    folder = real_test_set
    with TestSet(folder / "test.h5") as truth:
        real = truth.ground_truth(0, truth.n_samples)
    options = ("lve",)
    assert _value(_score(folder, "real-lve", real, options), "lve", "lve") == pytest.approx(0.0)
    jitter = defects.make_defect_set(folder / "test.h5", "jitter", 2, folder / "jitter-lve.h5")
    summary = score_all(folder, folder / "test.h5", jitter, {**OPTIONS, "metrics": ["lve"]})
    # Measured: 2.78 px/frame for a 2-px shake (dlib's points follow the face); 3.5x margin.
    assert _value(summary["metrics"], "lve", "lve") > 0.8


def _words(folder, clips):
    rows = []
    for speaker, clip, words, start in clips:
        for slot, word in enumerate(words.split()):
            rows.append([speaker, clip, slot, alignments.SLOTS[slot], word,
                         start + 0.1 * slot, start + 0.1 * (slot + 1)])
    path = folder / "words.tsv"
    pd.DataFrame(rows, columns=alignments.COLUMNS).to_csv(path, sep="\t", index=False)
    return path


def test_content_swap_takes_the_mouth_of_the_same_word_slot_of_another_sentence(tmp_path):
    from helpers import patterned_crop

    clips = [("s1", "a"), ("s1", "b")]
    faces = np.stack([patterned_crop(c, f, 96) for c in range(2) for f in range(40)])
    write_test_set(tmp_path / "test.h5", faces=faces, clips=clips, crops_per_clip=40)
    # clip a speaks from 0.2 s (frame 5), clip b from 0.6 s (frame 15), 0.1 s (2.5 frames) a word
    words = _words(tmp_path, [("s1", "a", "bin blue at l seven soon", 0.2),
                              ("s1", "b", "lay red by m six now", 0.6)])
    output = defects.make_defect_set(tmp_path / "test.h5", "content_swap", 1,
                                     tmp_path / "swap.h5", words=[words])
    with TestSet(tmp_path / "test.h5") as truth:
        donors = content_swap.donor_crops(truth, alignments.read_words([words]))
        frames = truth.crop_frames()
    # write_test_set's crops are frames 4..43; sample frame f of clip a at time t in its word
    # maps to time t + 0.4 s in clip b: 10 frames later.
    sample = 10  # frame 14 of clip a
    assert frames[donors[sample]] == frames[sample] + 10 and donors[sample] >= 40
    import h5py

    with h5py.File(output) as handle:
        swapped = handle["faces"][sample]
    assert (swapped[48:] == faces[donors[sample]][48:]).all()
    assert (swapped[:48] == faces[sample][:48]).all()


def test_content_swap_with_one_clip_per_speaker_takes_the_next_word_slot():
    segments = {("s1", "a"): [alignments.Segment(0.1 * k, 0.1 * (k + 1), w) for k, w in
                              enumerate("bin blue at l seven soon".split())]}
    donor, slot_map = content_swap.choose_donor("s1", "a", ["a"], segments)
    assert donor == "a" and slot_map == [1, 2, 3, 4, 5, 0]
    # the middle of word 0 maps to the middle of word 1
    assert content_swap.donor_time(0.05, segments[("s1", "a")], segments[("s1", "a")],
                                   slot_map) == pytest.approx(0.15)


def test_content_swap_without_alignments_is_refused(tmp_path):
    write_test_set(tmp_path / "test.h5")
    with pytest.raises(LipsyncError, match="needs the word tables"):
        defects.make_defect_set(tmp_path / "test.h5", "content_swap", 1, tmp_path / "o.h5")
    words = _words(tmp_path, [("s1", "other", "bin blue at l seven soon", 0.2)])
    with pytest.raises(LipsyncError, match="no GRID word alignment for test clip"):
        defects.make_defect_set(tmp_path / "test.h5", "content_swap", 1, tmp_path / "o.h5",
                                words=[words])
