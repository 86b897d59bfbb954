"""A shard with broken clips: each is excluded with a reason naming its file, the rest go through."""

from __future__ import annotations

import h5py
import pandas as pd
import pytest
from helpers import face_frames, sine, truncate_at_video_frame, write_mpg

from lipsync.core.errors import InputError
from lipsync.data import audio, faces
from lipsync.data.manifest import ClipEntry, write_manifest


@pytest.fixture(scope="module")
def broken_shard(tmp_path_factory):
    """A manifest of good and bad clips; returns (manifest path, {clip: video path})."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    good = write_mpg(folder / "good.mpg", face_frames(12), audio=sine(0.48, 44100))
    videos = {"a_good": good}
    whole = write_mpg(folder / "whole.mpg", face_frames(25), audio=sine(1.0, 44100))
    videos["b_truncated"] = truncate_at_video_frame(whole, folder / "truncated.mpg", 15)
    videos["c_empty"] = folder / "empty.mpg"
    videos["c_empty"].write_bytes(b"")
    videos["d_missing"] = folder / "missing.mpg"
    videos["e_garbage"] = folder / "garbage.mpg"
    videos["e_garbage"].write_bytes(b"\x00\x01 not mpeg at all " * 100)
    videos["f_mute"] = write_mpg(folder / "mute.mpg", face_frames(12))
    videos["g_blank"] = write_mpg(folder / "blank.mpg", face_frames(12, face=False),
                                  audio=sine(0.48, 44100))
    manifest = folder / "manifest.tsv"
    write_manifest(manifest, [ClipEntry("sx", clip, str(path), None, None)
                              for clip, path in videos.items()])
    return manifest, videos


def test_faces_exclude_broken_clips_and_keep_the_rest(broken_shard, tmp_path):
    manifest, videos = broken_shard
    output, coverage = tmp_path / "faces.h5", tmp_path / "coverage.tsv"
    faces.extract_shard(manifest, 0, 0, output, coverage, options={"faces": {}, "video": {}})
    table = pd.read_csv(coverage, sep="\t", keep_default_na=False).set_index("clip")
    assert len(table) == len(videos)  # no clip silently dropped
    expected = {"a_good": "ok", "b_truncated": "ok", "c_empty": "excluded",
                "d_missing": "excluded", "e_garbage": "excluded", "f_mute": "ok",
                "g_blank": "excluded"}
    assert table["status"].to_dict() == expected
    for clip, status in expected.items():
        if status == "excluded":
            assert str(videos[clip]) in table.loc[clip, "reason"]
    assert "empty" in table.loc["c_empty", "reason"]
    assert "does not exist" in table.loc["d_missing", "reason"]
    assert "not a decodable" in table.loc["e_garbage", "reason"]
    assert "no face" in table.loc["g_blank", "reason"]
    # The truncated clip keeps what decodes, and says it is short.
    assert 0 < table.loc["b_truncated", "frames"] < 25
    assert "fewer than video.frames_per_clip" in table.loc["b_truncated", "reason"]
    with h5py.File(output, "r") as handle:
        assert sorted(handle["clips"]) == ["a_good", "b_truncated", "f_mute"]
        assert handle["clips/a_good/crops"].shape == (12, 96, 96, 3)
        assert (handle["clips/b_truncated/crops"].shape[0]
                == table.loc["b_truncated", "frames"])


def test_mels_exclude_clips_without_usable_audio_and_keep_the_rest(broken_shard, tmp_path):
    manifest, videos = broken_shard
    output = tmp_path / "mels.h5"
    audio.compute_shard(manifest, 0, 0, output, options={"audio": {}, "source": "track"})
    status = audio.read_status(output).set_index("clip")
    assert len(status) == len(videos)
    # The truncated download keeps most of its pictures but loses most of its audio (the MP2
    # track lags the video in the stream): more than one mel window short, so it is excluded.
    excluded = {"b_truncated", "c_empty", "d_missing", "e_garbage", "f_mute"}
    assert set(status.index[status["status"] == "excluded"]) == excluded
    for clip in excluded:
        assert str(videos[clip]) in status.loc[clip, "reason"]
    assert "no audio stream" in status.loc["f_mute", "reason"]
    assert "shorter than the video" in status.loc["b_truncated", "reason"]
    with h5py.File(output, "r") as handle:
        assert sorted(handle["clips"]) == ["a_good", "g_blank"]
        # 12 frames = 0.48 s = 7680 samples at 16 kHz: 1 + 7680 // 200 mel frames.
        assert handle["clips/a_good/mel"].shape == (80, 39)


def test_real_clip_cut_to_forty_percent_still_gives_a_short_face_track(grid_samples, tmp_path):
    content = (grid_samples / "brbk7n.mpg").read_bytes()
    truncated = tmp_path / "brbk7n.mpg"
    truncated.write_bytes(content[: int(len(content) * 0.4)])
    write_manifest(tmp_path / "m.tsv", [ClipEntry("s1", "brbk7n", str(truncated), None, None)])
    table = faces.extract_shard(tmp_path / "m.tsv", 0, 0, tmp_path / "f.h5", tmp_path / "c.tsv",
                                options={"faces": {}, "video": {}})
    assert table["status"].tolist() == ["ok"]
    assert 10 < table["frames"][0] < 75 and table["detected"][0] == table["frames"][0]


def test_unreadable_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as error:
        faces.extract_shard(tmp_path / "nope.tsv", 0, 0, tmp_path / "f.h5", tmp_path / "c.tsv",
                            options={})
    assert "nope.tsv" in str(error.value)
