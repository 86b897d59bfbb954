"""Listing one speaker's clips from a GRID folder on disk, in the official and the mirror layout."""

from __future__ import annotations

import time

import pytest

from lipsync.core.errors import InputError
from lipsync.data import local
from lipsync.data.manifest import read_manifest


def _touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _mirror_tree(root, clips=("bbaf2n", "lgaz8p", "swwp2s"), aligned=("bbaf2n", "swwp2s")):
    for clip in clips:
        _touch(root / "s1" / f"{clip}.mpg")
    for clip in aligned:
        _touch(root / "alignments" / "s1" / f"{clip}.align")
    _touch(root / "alignments" / "s2" / "lgaz8p.align")  # another speaker's: must not leak in


def test_mirror_layout_pairs_videos_with_their_alignments(tmp_path):
    _mirror_tree(tmp_path)
    entries = local.find_clips("s1", tmp_path)
    assert [e.clip for e in entries] == ["bbaf2n", "lgaz8p", "swwp2s"]
    assert entries[0].video == str(tmp_path / "s1" / "bbaf2n.mpg")
    assert entries[0].align == str(tmp_path / "alignments" / "s1" / "bbaf2n.align")
    assert entries[1].align is None  # no alignment: listed with an empty align
    assert all(e.audio is None and e.speaker == "s1" for e in entries)


def test_official_layout_with_nested_videos_and_50khz_wavs(tmp_path):
    for clip in ("bbaf2n", "pgwr6p"):
        _touch(tmp_path / "s1" / "video" / "mpg_vcd" / "s1" / f"{clip}.mpg")
        _touch(tmp_path / "s1" / "align" / f"{clip}.align")
        _touch(tmp_path / "s1" / "audio" / f"{clip}.wav")
    _touch(tmp_path / "s1" / "video" / "mpg_vcd" / "s1" / "._bbaf2n.mpg")  # macOS resource fork
    entries = local.find_clips("s1", tmp_path, audio="wav50k")
    assert [(e.clip, e.video, e.align, e.audio) for e in entries] == [
        (clip, str(tmp_path / "s1" / "video" / "mpg_vcd" / "s1" / f"{clip}.mpg"),
         str(tmp_path / "s1" / "align" / f"{clip}.align"),
         str(tmp_path / "s1" / "audio" / f"{clip}.wav"))
        for clip in ("bbaf2n", "pgwr6p")
    ]


def test_wav50k_without_a_wav_names_the_clip(tmp_path):
    _touch(tmp_path / "s1" / "bbaf2n.mpg")
    _touch(tmp_path / "s1" / "lgaz8p.mpg")
    _touch(tmp_path / "s1" / "audio" / "bbaf2n.wav")
    with pytest.raises(InputError, match="clip lgaz8p has no 50 kHz .wav") as error:
        local.find_clips("s1", tmp_path, audio="wav50k")
    assert error.value.path == str(tmp_path / "s1" / "lgaz8p.mpg")


def test_a_missing_speaker_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="speaker folder not found") as error:
        local.count_clips("s3", tmp_path)
    assert error.value.path == str(tmp_path / "s3")


def test_a_speaker_folder_without_videos_is_an_error(tmp_path):
    _touch(tmp_path / "s1" / "notes.txt")
    with pytest.raises(InputError, match="no .mpg videos"):
        local.find_clips("s1", tmp_path)


def test_the_same_clip_twice_is_an_error_naming_both(tmp_path):
    _touch(tmp_path / "s1" / "bbaf2n.mpg")
    _touch(tmp_path / "s1" / "copy" / "bbaf2n.mpg")
    with pytest.raises(InputError, match="found twice"):
        local.find_clips("s1", tmp_path)


def test_speaker_21_without_video_is_an_empty_listing(tmp_path):
    assert local.count_clips("s21", tmp_path) == 0
    local.write_manifest("s21", tmp_path, tmp_path / "s21.tsv")
    assert read_manifest(tmp_path / "s21.tsv") == []


def test_write_manifest_keeps_the_first_clips_by_id(tmp_path):
    _mirror_tree(tmp_path, clips=("swwp2s", "bbaf2n", "lgaz8p"))
    local.write_manifest("s1", tmp_path, tmp_path / "m.tsv", max_clips_per_speaker=2)
    assert [e.clip for e in read_manifest(tmp_path / "m.tsv")] == ["bbaf2n", "lgaz8p"]
    assert local.count_clips("s1", tmp_path) == 3


def test_real_speaker_s1_has_320_aligned_clips(grid_s1, tmp_path):
    started = time.perf_counter()
    count = local.count_clips("s1", grid_s1)
    count_seconds = time.perf_counter() - started
    assert count == 320
    assert count_seconds < 1.0  # a directory listing: cheap enough for DAG-build time
    local.write_manifest("s1", grid_s1, tmp_path / "s1.tsv")
    entries = read_manifest(tmp_path / "s1.tsv")
    assert len(entries) == 320 and all(e.align for e in entries)
    listed = (grid_s1 / "SHA256SUMS").read_text().split()[1::2]  # "<sha>  <clip>.mpg" lines
    assert [e.clip for e in entries] == sorted(name.removesuffix(".mpg") for name in listed)
    assert all(e.align.endswith(f"alignments/s1/{e.clip}.align") for e in entries)
