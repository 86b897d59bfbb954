"""Face tracks: following the face, box interpolation, smoothing, padding, cropping, detectors, and
the shard job."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import face_frames, write_mpg

from lipsync.core.errors import LipsyncError
from lipsync.data import detectors, faces
from lipsync.data.manifest import ClipEntry, write_manifest

FACE = np.array([100., 50., 200., 170., 1.])


class ScriptedDetector:
    """A detector double: a fixed box, or nothing on the frames listed in `misses` (by call order)."""

    name = "scripted"

    def __init__(self, misses=()):
        self.misses = set(misses)
        self.calls = 0
        self.seen = 0

    def detect(self, frames):
        boxes = []
        for _ in frames:
            boxes.append(np.zeros((0, 5)) if self.seen in self.misses else FACE[None].copy())
            self.seen += 1
        self.calls += 1
        return boxes


def _options(**faces_options):
    return {"faces": {"smoothing_frames": 1, **faces_options}, "video": {}}


def test_sampled_frames_include_the_last_frame():
    assert faces.sampled_frames(10, 3).tolist() == [0, 3, 6, 9]
    assert faces.sampled_frames(11, 3).tolist() == [0, 3, 6, 9, 10]
    assert faces.sampled_frames(4, 1).tolist() == [0, 1, 2, 3]


def test_boxes_are_interpolated_between_detections_and_held_at_the_ends():
    sampled = np.array([0, 2, 4])
    found = [np.array([0., 0., 10., 10.]), None, np.array([4., 8., 14., 18.])]
    boxes, detected = faces.track_boxes(sampled, found, 5)
    assert boxes[1].tolist() == [1, 2, 11, 12]
    assert boxes[2].tolist() == [2, 4, 12, 14]
    assert detected.tolist() == [True, False, False, False, True]
    # Nothing before the first detection: hold it.
    boxes, detected = faces.track_boxes(np.arange(3), [None, None, np.ones(4)], 3)
    assert boxes.tolist() == [[1] * 4] * 3 and detected.tolist() == [False, False, True]


def test_frames_between_two_successful_detections_count_as_detected():
    boxes, detected = faces.track_boxes(np.array([0, 3]), [np.zeros(4), np.full(4, 3.0)], 4)
    assert detected.all()
    assert boxes[:, 0].tolist() == [0, 1, 2, 3]


def test_no_detection_anywhere_gives_none():
    assert faces.track_boxes(np.arange(3), [None, None, None], 3) is None


def test_smoothing_is_a_centred_moving_average():
    boxes = np.zeros((7, 4))
    boxes[3] = 5.0
    smoothed = faces.smooth_boxes(boxes, 5)
    assert smoothed[:, 0].tolist() == pytest.approx([0, 5 / 4, 1, 1, 1, 5 / 4, 0])
    constant = np.tile([1.0, 2.0, 3.0, 4.0], (6, 1))
    np.testing.assert_allclose(faces.smooth_boxes(constant, 5), constant)
    np.testing.assert_array_equal(faces.smooth_boxes(boxes, 1), boxes)


def test_padding_grows_by_fractions_of_the_box_and_stays_inside_the_image():
    box = np.array([[100.0, 100.0, 200.0, 150.0]])  # 100 wide, 50 high
    padded = faces.pad_boxes(box, {"top": 0.2, "bottom": 0.4, "left": 0.1, "right": 0.0}, 360, 288)
    assert padded.tolist() == [[90, 90, 200, 170]]
    clamped = faces.pad_boxes(box, {"top": 3, "bottom": 3, "left": 2, "right": 2}, 360, 288)
    assert clamped.tolist() == [[0, 0, 360, 288]]


def test_crop_cuts_the_box_and_resizes_it():
    frame = np.zeros((1, 100, 120, 3), np.uint8)
    frame[0, 20:60, 30:90] = (255, 0, 0)
    crops = faces.crop_faces(frame, np.array([[30.0, 20.0, 90.0, 60.0]]), 32)
    assert crops.shape == (1, 32, 32, 3)
    assert (crops[0] == (255, 0, 0)).all()


def test_detect_every_runs_the_detector_on_every_kth_frame_only(tmp_path):
    clip = write_mpg(tmp_path / "c.mpg", face_frames(10))
    detector = ScriptedDetector()
    opts = _options(detect_every=3)
    result = faces.process_clip(ClipEntry("sx", "c", str(clip), None, None), detector,
                                faces._merged(faces.FACES_DEFAULTS, opts["faces"]),
                                faces.VIDEO_DEFAULTS)
    assert detector.seen == 4  # frames 0, 3, 6, 9
    assert result.status == "ok" and result.frames == 10 and result.detected == 10
    assert result.crops.shape == (10, 96, 96, 3)


def _process(tmp_path, detector, n_frames=10, **faces_options):
    clip = write_mpg(tmp_path / "c.mpg", face_frames(n_frames))
    return faces.process_clip(ClipEntry("sx", "c", str(clip), None, None), detector,
                              faces._merged(faces.FACES_DEFAULTS, faces_options),
                              faces.VIDEO_DEFAULTS)


def test_missed_frames_are_filled_and_counted_when_coverage_suffices(tmp_path):
    result = _process(tmp_path, ScriptedDetector(misses={4}), min_coverage=0.85)
    assert result.status == "ok"
    assert result.detected == 9 and result.coverage == pytest.approx(0.9)
    assert result.detected_mask.tolist() == [True] * 4 + [False] + [True] * 5
    assert "1 frames without a face" in result.reason
    assert result.crops.shape[0] == 10


def test_clip_below_min_coverage_is_excluded_with_the_reason(tmp_path):
    result = _process(tmp_path, ScriptedDetector(misses={1, 2, 3}), min_coverage=0.9)
    assert result.status == "excluded"
    assert "coverage 0.700 < faces.min_coverage 0.9" in result.reason
    assert result.crops is None


def test_wrong_frame_rate_is_excluded_naming_the_clip(tmp_path):
    clip = write_mpg(tmp_path / "fast.mpg", face_frames(6), fps=30)
    result = faces.process_clip(ClipEntry("sx", "fast", str(clip), None, None),
                                ScriptedDetector(), faces.FACES_DEFAULTS, faces.VIDEO_DEFAULTS)
    assert result.status == "excluded"
    assert str(clip) in result.reason and "30 fps" in result.reason


def test_opencv_finds_the_pasted_face_and_tracks_it(tmp_path):
    frames = face_frames(8, shift=4)
    found = detectors.build({"detector": "opencv"}).detect(frames)
    # One candidate row per box: x0 y0 x1 y1 and the cascade's neighbour count.
    assert all(rows.shape == (1, 5) and rows[0, 4] >= 5 for rows in found)
    # The face drifts 4 px right per frame; so does the box.
    assert found[-1][0, 0] - found[0][0, 0] == pytest.approx(28, abs=6)
    empty = detectors.build({"detector": "opencv"}).detect(face_frames(2, face=False))
    assert [rows.shape for rows in empty] == [(0, 5)] * 2


def test_s3fd_without_weights_says_how_to_get_them(tmp_path):
    missing = tmp_path / "s3fd.pth"
    with pytest.raises(LipsyncError) as error:
        detectors.build({"detector": "s3fd", "s3fd_weights": str(missing)})
    message = str(error.value)
    assert str(missing) in message and "lipsync download-weights" in message
    assert "faces.s3fd_weights" in message


def test_unknown_detector_is_refused():
    with pytest.raises(LipsyncError, match="unknown face detector"):
        detectors.build({"detector": "mtcnn"})


def test_s3fd_with_random_weights_runs_and_returns_boxes_or_none(tmp_path):
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    torch.set_num_threads(1)
    weights = tmp_path / "s3fd-random.pth"
    torch.save(s3fd().state_dict(), weights)
    detector = detectors.build({"detector": "s3fd", "s3fd_weights": str(weights)})
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 80, 3), dtype=np.uint8)
    found = detector.detect(frames)
    assert len(found) == 3
    for rows in found:
        assert rows.ndim == 2 and rows.shape[1] == 5 and np.isfinite(rows).all()
    # A corrupt weights file is a clear error, not a crash deep inside torch.
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(LipsyncError, match="not a usable S3FD"):
        detectors.build({"detector": "s3fd", "s3fd_weights": str(bad)})


def test_real_clips_have_a_face_in_every_frame(grid_samples, tmp_path):
    clips = ["bbaf2n", "brbk7n", "swwp2s"]
    write_manifest(tmp_path / "m.tsv",
                   [ClipEntry("sx", c, str(grid_samples / f"{c}.mpg"), None, None) for c in clips])
    output, coverage = tmp_path / "faces.h5", tmp_path / "coverage.tsv"
    faces.extract_shard(tmp_path / "m.tsv", 0, 0, output, coverage,
                        options={"faces": {"detector": "opencv"}, "video": {"fps": 25}})
    table = pd.read_csv(coverage, sep="\t", keep_default_na=False)
    assert table.columns.tolist() == faces.COVERAGE_COLUMNS
    assert table["frames"].tolist() == [75] * 3 and table["detected"].tolist() == [75] * 3
    assert table["status"].tolist() == ["ok"] * 3
    assert table["rejected"].tolist() == [0] * 3  # the real face never leaves the track
    with h5py.File(output, "r") as handle:
        for clip in clips:
            group = handle[f"clips/{clip}"]
            assert group["crops"].shape == (75, 96, 96, 3) and group["crops"].dtype == np.uint8
            assert group["frames"][:].tolist() == list(range(75))
            boxes = group["boxes"][:]
            assert boxes.dtype == np.float32 and boxes.shape == (75, 4)
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 360).all()
            assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 288).all()
            # A GRID face is 100-200 px across in a 360 x 288 frame.
            assert 80 < np.median(boxes[:, 2] - boxes[:, 0]) < 220
            assert group["detected"][:].all()
            assert group.attrs["speaker"] == "sx" and group.attrs["fps"] == 25.0
        options = json.loads(handle.attrs["options"])
        assert options["faces"]["image_size"] == 96 and options["video"]["frames_per_clip"] == 75
        assert "libraries" in json.loads(handle.attrs["provenance"])


def test_threads_give_the_same_output_as_one(tmp_path):
    entries = []
    for name in ("a", "b", "c"):
        clip = write_mpg(tmp_path / f"{name}.mpg", face_frames(6, shift=3))
        entries.append(ClipEntry("sx", name, str(clip), None, None))
    write_manifest(tmp_path / "m.tsv", entries)
    crops = []
    for threads in (1, 2):
        output = tmp_path / f"faces-{threads}.h5"
        faces.extract_shard(tmp_path / "m.tsv", 0, 0, output, tmp_path / f"cov-{threads}.tsv",
                            options={"faces": {}, "video": {}}, threads=threads)
        with h5py.File(output, "r") as handle:
            crops.append({name: handle[f"clips/{name}/crops"][:] for name in handle["clips"]})
    assert crops[0].keys() == crops[1].keys() == {"a", "b", "c"}
    for name in crops[0]:
        np.testing.assert_array_equal(crops[0][name], crops[1][name])


def test_shards_slice_the_manifest(tmp_path):
    entries = [ClipEntry("sx", name, str(write_mpg(tmp_path / f"{name}.mpg", face_frames(3))),
                         None, None) for name in ("a", "b", "c")]
    write_manifest(tmp_path / "m.tsv", entries)
    table = faces.extract_shard(tmp_path / "m.tsv", 1, 2, tmp_path / "f.h5", tmp_path / "c.tsv",
                                options={"faces": {}, "video": {}})
    assert table["clip"].tolist() == ["c"]


def test_empty_shard_gives_valid_empty_outputs(tmp_path):
    write_manifest(tmp_path / "m.tsv", [])
    faces.extract_shard(tmp_path / "m.tsv", 0, 0, tmp_path / "f.h5", tmp_path / "c.tsv",
                        options={"faces": {}, "video": {}})
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        assert len(handle["clips"]) == 0 and "options" in handle.attrs
    assert pd.read_csv(tmp_path / "c.tsv", sep="\t").columns.tolist() == faces.COVERAGE_COLUMNS


def test_missing_s3fd_weights_stop_the_shard_before_any_output(tmp_path):
    write_manifest(tmp_path / "m.tsv", [])
    with pytest.raises(LipsyncError, match="download-weights"):
        faces.extract_shard(tmp_path / "m.tsv", 0, 0, tmp_path / "f.h5", tmp_path / "c.tsv",
                            options={"faces": {"detector": "s3fd",
                                               "s3fd_weights": str(tmp_path / "none.pth")},
                                     "video": {}})
    assert not (tmp_path / "f.h5").exists() and not (tmp_path / "c.tsv").exists()
