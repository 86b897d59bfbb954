"""Split selection: usable clips, seeded per-speaker draw, nesting, disjointness, summary."""

import logging

import pandas as pd
from helpers import make_shard_files

from lipsync.data.splits import assign_clips, write_splits

OPTIONS = {"seed": 3, "test": 4, "small": 3, "full": 8}


def read(folder, name):
    return pd.read_csv(folder / f"{name}.tsv", sep="\t", dtype=str)


def pairs(frame):
    return set(zip(frame["speaker"], frame["clip"], strict=True))


def test_splits_are_disjoint_nested_and_sized(tmp_path):
    shards = make_shard_files(tmp_path, speakers=("s1", "s2"), clips=16, n_frames=2,
                              image_size=4, mel_steps=8)
    write_splits(shards.coverage, shards.mels, tmp_path / "splits", options=OPTIONS)
    small, full, test = (read(tmp_path / "splits", n) for n in ("small", "full", "test"))
    for speaker in ("s1", "s2"):
        assert (test["speaker"] == speaker).sum() == 4
        assert (full["speaker"] == speaker).sum() == 8
        assert (small["speaker"] == speaker).sum() == 3
    assert pairs(small) <= pairs(full)
    assert not pairs(full) & pairs(test)


def test_splits_are_deterministic_and_depend_on_the_seed(tmp_path):
    shards = make_shard_files(tmp_path, clips=30, n_frames=2, image_size=4, mel_steps=8)
    write_splits(shards.coverage, shards.mels, tmp_path / "a", options=OPTIONS)
    write_splits(shards.coverage, shards.mels, tmp_path / "b", options=OPTIONS)
    write_splits(shards.coverage, shards.mels, tmp_path / "c", options={**OPTIONS, "seed": 4})
    for name in ("small", "full", "test", "summary"):
        assert (tmp_path / "a" / f"{name}.tsv").read_bytes() == (
            tmp_path / "b" / f"{name}.tsv").read_bytes()
    assert pairs(read(tmp_path / "a", "test")) != pairs(read(tmp_path / "c", "test"))


def test_speakers_get_different_draws_from_one_seed():
    clips = [f"c{k:03d}" for k in range(50)]
    assert assign_clips(clips, "s1", seed=0, test=5, small=5, full=10) != assign_clips(
        clips, "s2", seed=0, test=5, small=5, full=10)


def test_excluded_and_mel_less_clips_are_unused_and_summarised(tmp_path, caplog):
    shards = make_shard_files(tmp_path, clips=10, n_frames=2, image_size=4, mel_steps=8,
                              excluded=("c001", "c002"), no_mel=("c003",))
    with caplog.at_level(logging.WARNING, logger="lipsync"):
        write_splits(shards.coverage, shards.mels, tmp_path / "splits", options=OPTIONS)
    used = set()
    for name in ("test", "full"):
        used |= set(read(tmp_path / "splits", name)["clip"])
    assert used == {"c000", "c004", "c005", "c006", "c007", "c008", "c009"}
    summary = read(tmp_path / "splits", "summary").iloc[0]
    assert summary["usable"] == "7" and summary["excluded"] == "3"
    assert "no mel spectrogram: 1" in summary["excluded_reasons"]
    assert "face coverage 0.50 < 0.90: 2" in summary["excluded_reasons"]
    assert (summary["test"], summary["full"], summary["small"]) == ("4", "3", "3")
    assert "short of" in caplog.text and "full by 5" in caplog.text


def test_summary_names_each_excluded_clip_and_why(tmp_path):
    from lipsync.data.audio import STATUS_COLUMNS, _write_status

    shards = make_shard_files(tmp_path, clips=5, n_frames=2, image_size=4, mel_steps=8,
                              excluded=("c001",), no_mel=("c003", "c004"))
    # The mels job refused c003's audio (and said why); c004's status row is missing.
    status = pd.DataFrame([["s1", "c000", "ok", "", 3.0, 8],
                           ["s1", "c003", "excluded", "c003.mpg: audio of 0.520 s is 2.480 s "
                            "shorter than the video", 0.52, 0]], columns=STATUS_COLUMNS)
    import h5py

    with h5py.File(shards.mels[0], "a") as handle:
        _write_status(handle, status)
    write_splits(shards.coverage, shards.mels, tmp_path / "splits", options=OPTIONS)
    summary = read(tmp_path / "splits", "summary").iloc[0]
    assert summary["excluded_clips"].split("; ") == [
        "c001: face coverage 0.50 < 0.90",
        "c003: no mel spectrogram (c003.mpg: audio of 0.520 s is 2.480 s shorter than the video)",
        "c004: no mel spectrogram"]
    assert "no mel spectrogram: 2" in summary["excluded_reasons"]
