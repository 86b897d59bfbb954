"""Following the face across frames: false boxes rejected and counted, the dlib HOG backend."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import face_frames, write_mpg

from lipsync.core.errors import LipsyncError
from lipsync.data import decode, detectors, faces
from lipsync.data.manifest import ClipEntry, write_manifest

LIMITS = faces._tracking(faces.FACES_DEFAULTS["tracking"])
FACE = [100.0, 50.0, 200.0, 170.0]  # 100 x 120 px
# A false box like fault 10's: 186 px across, beside the face, larger than it.
FALSE_BOX = [150.0, 10.0, 336.0, 196.0]


def rows(*boxes: list[float], score: float = 1.0) -> np.ndarray:
    return detectors.candidates(np.array(boxes).reshape(-1, 4), np.full(len(boxes), score))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area - inter)


def test_jumps_are_fractions_of_the_box_size_and_symmetric_in_scale():
    reference = np.array([0.0, 0.0, 100.0, 100.0])
    shift, change = faces.box_jumps(reference, np.array([[10.0, 0.0, 110.0, 100.0],
                                                         [-50.0, -50.0, 150.0, 150.0],
                                                         [25.0, 25.0, 75.0, 75.0]]))
    assert shift.tolist() == pytest.approx([0.1, 0.0, 0.0])
    assert change.tolist() == pytest.approx([0.0, 1.0, 1.0])  # twice or half the size alike


def test_the_track_keeps_the_candidate_that_continues_it_not_the_largest():
    found = [rows(FACE)] * 3 + [rows(FALSE_BOX, FACE)] + [rows(FACE)] * 3
    boxes, rejected = faces.follow_track(found, **LIMITS)
    assert [box.tolist() for box in boxes] == [FACE] * 7
    assert rejected == 1


def test_a_smaller_stray_box_is_ignored_and_not_counted():
    chin = [125.0, 130.0, 175.0, 180.0]  # half the face's size, below its centre
    found = [rows(FACE, chin)] * 5
    boxes, rejected = faces.follow_track(found, **LIMITS)
    assert [box.tolist() for box in boxes] == [FACE] * 5 and rejected == 0


def test_a_frame_with_only_a_false_box_becomes_a_miss_and_is_interpolated():
    found = [rows(FACE)] * 3 + [rows(FALSE_BOX)] + [rows(FACE)] * 3
    boxes, rejected = faces.follow_track(found, **LIMITS)
    assert boxes[3] is None and rejected == 1
    filled, detected = faces.track_boxes(np.arange(7), boxes, 7)
    assert filled[3].tolist() == FACE and not detected[3]


def test_the_track_does_not_start_on_a_false_box_in_the_first_frame():
    found = [rows(FALSE_BOX)] + [rows(FACE)] * 6
    boxes, rejected = faces.follow_track(found, **LIMITS)
    assert boxes[0] is None and all(box.tolist() == FACE for box in boxes[1:])
    assert rejected == 1


def test_the_track_follows_a_face_that_moves_a_little_every_frame():
    # 5 px per frame (5% of the box), 150 px over 30 frames: each step is small, the sum is not.
    found = [rows([100.0 + 5 * i, 50.0, 200.0 + 5 * i, 170.0]) for i in range(30)]
    boxes, rejected = faces.follow_track(found, **LIMITS)
    assert rejected == 0 and all(box is not None for box in boxes)


def test_no_candidates_anywhere_give_no_boxes():
    assert faces.follow_track([rows()] * 3, **LIMITS) == ([None] * 3, 0)


def test_running_median_replaces_a_one_frame_outlier():
    boxes = np.tile(np.array(FACE), (7, 1))
    boxes[3] = FALSE_BOX
    np.testing.assert_array_equal(faces.median_boxes(boxes, 5), np.tile(FACE, (7, 1)))
    # The moving average alone spreads it over the window instead.
    assert not np.allclose(faces.smooth_boxes(boxes, 5)[1:6], FACE)
    np.testing.assert_array_equal(faces.median_boxes(boxes, 1), boxes)


class InjectedDetector:
    """Replays a clip's recorded candidates, with a false box beside (or instead of) the face's on
    one frame."""

    name = "injected"

    def __init__(self, found: list[np.ndarray], frame: int | None, false_box: list[float],
                 alone: bool = False):
        self.found, self.frame, self.false_box, self.alone = found, frame, false_box, alone

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        assert len(frames) == len(self.found)
        out = [rows_.copy() for rows_ in self.found]
        if self.frame is not None:
            false = rows(self.false_box, score=20.0)
            out[self.frame] = false if self.alone else np.vstack([out[self.frame], false])
        return out


@pytest.fixture(scope="module")
def real_clip(grid_samples):
    """bbaf2n's OpenCV candidates, and a false box 186 px across, well off its face."""
    video = grid_samples / "bbaf2n.mpg"
    found = detectors.build({"detector": "opencv"}).detect(decode.read_video(video)[0])
    face = detectors.largest_box(found[20])
    size = np.sqrt((face[2] - face[0]) * (face[3] - face[1]))
    # Centred a half face-width to the right and 30% above: on hair and background, as in fault 10.
    centre = (face[:2] + face[2:]) / 2 + np.array([0.5 * size, -0.3 * size])
    false_box = np.concatenate([centre - 93, centre + 93]).clip(0, [360, 288, 360, 288]).tolist()
    return video, found, false_box


def _extract(tmp_path, monkeypatch, video, detector, name, **faces_options):
    """Boxes and coverage row of `video` through the shard job, with `detector` registered."""
    monkeypatch.setitem(detectors.DETECTORS, "injected", lambda options: detector)
    write_manifest(tmp_path / f"{name}.tsv", [ClipEntry("s1", "bbaf2n", str(video), None, None)])
    output, coverage = tmp_path / f"{name}.h5", tmp_path / f"{name}.tsv.coverage"
    faces.extract_shard(tmp_path / f"{name}.tsv", 0, 0, output, coverage,
                        options={"faces": {"detector": "injected", **faces_options}, "video": {}})
    with h5py.File(output, "r") as handle:
        boxes = handle["clips/bbaf2n/boxes"][:]
    return boxes, pd.read_csv(coverage, sep="\t", keep_default_na=False).iloc[0]


@pytest.mark.parametrize("alone", [False, True], ids=["beside-the-face", "instead-of-the-face"])
def test_a_false_box_on_a_real_clip_leaves_the_crops_on_the_face_and_is_counted(
        real_clip, tmp_path, monkeypatch, alone):
    video, found, false_box = real_clip
    injected = InjectedDetector(found, 20, false_box, alone)
    clean_boxes, clean_row = _extract(tmp_path, monkeypatch, video,
                                      InjectedDetector(found, None, false_box), "clean")
    boxes, row = _extract(tmp_path, monkeypatch, video, injected, "injected")
    assert clean_row["rejected"] == 0 and row["rejected"] == 1
    assert row["status"] == "ok" and "1 boxes off the face track rejected" in row["reason"]
    assert iou(boxes[15:26], clean_boxes[15:26]).min() > 0.9
    # The largest box, as chosen before there was a track, would be the false one.
    assert detectors.largest_box(injected.detect(np.empty(len(found)))[20]).tolist() == false_box


def test_without_the_tracks_limits_a_false_box_drags_the_crops_off_the_face(
        real_clip, tmp_path, monkeypatch):
    video, found, false_box = real_clip
    injected = InjectedDetector(found, 20, false_box, alone=True)
    clean_boxes, _ = _extract(tmp_path, monkeypatch, video,
                              InjectedDetector(found, None, false_box), "clean")
    loose = {"max_centre_shift": 100.0, "max_size_change": 100.0}
    boxes, row = _extract(tmp_path, monkeypatch, video, injected, "loose", tracking=loose,
                          median_frames=1)
    assert row["rejected"] == 0 and iou(boxes[18:23], clean_boxes[18:23]).max() < 0.9


def test_dlib_finds_the_pasted_face_with_a_score():
    pytest.importorskip("dlib")
    detector = detectors.build({"detector": "dlib", "dlib": {"upsample": 0}})
    found = detector.detect(face_frames(3, shift=4))
    assert all(rows_.shape == (1, 5) for rows_ in found)
    face = found[0][0]
    # The astronaut's face is pasted at x 60-260, y 40-240; dlib's box sits inside it.
    assert 60 <= face[0] < face[2] <= 260 and 40 <= face[1] < face[3] <= 240 and face[4] > 0
    empty = detector.detect(face_frames(1, face=False))
    assert [rows_.shape for rows_ in empty] == [(0, 5)]


def test_dlib_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    with pytest.raises(LipsyncError, match="dlib-bin"):
        detectors.build({"detector": "dlib"})


def test_dlib_threads_give_the_same_boxes_as_one(tmp_path):
    # dlib releases the GIL and a shared detector races; each thread must use its own.
    pytest.importorskip("dlib")
    entries = []
    # Clips that differ, so that a race between two threads shows in the boxes.
    for shift, name in enumerate(("a", "b", "c", "d"), start=1):
        clip = write_mpg(tmp_path / f"{name}.mpg", face_frames(8, shift=3 * shift))
        entries.append(ClipEntry("sx", name, str(clip), None, None))
    write_manifest(tmp_path / "m.tsv", entries)
    boxes = []
    for threads in (1, 2):
        output = tmp_path / f"faces-{threads}.h5"
        faces.extract_shard(tmp_path / "m.tsv", 0, 0, output, tmp_path / f"cov-{threads}.tsv",
                            options={"faces": {"detector": "dlib", "dlib": {"upsample": 0}},
                                     "video": {}}, threads=threads)
        with h5py.File(output, "r") as handle:
            boxes.append({name: handle[f"clips/{name}/boxes"][:] for name in handle["clips"]})
    assert boxes[0].keys() == boxes[1].keys() == {"a", "b", "c", "d"}
    for name in boxes[0]:
        np.testing.assert_array_equal(boxes[0][name], boxes[1][name])
