"""Packing a split: layout of the HDF5 file, counts of dropped samples and skipped clips."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import make_shard_files

from lipsync.data.pack import pack_split
from lipsync.errors import InputError


def options(**samples):
    return {"samples": samples, "dataset": {"layout": "raw", "chunk_crops": 8},
            "audio": {"sample_rate": 16000, "hop_length": 200}, "video": {"fps": 25},
            "seed": 1}


def clip_list(tmp_path, shards):
    path = tmp_path / "clips.tsv"
    rows = [(s, c) for s, clips in shards.clips.items() for c in clips]
    pd.DataFrame(rows, columns=["speaker", "clip"]).to_csv(path, sep="\t", index=False)
    return path


def pack(tmp_path, shards, split="full", **samples):
    output = tmp_path / f"{split}.h5"
    counts = pack_split(split, clip_list(tmp_path, shards), shards.faces, shards.mels, output,
                        options=options(**samples))
    return output, counts


def test_pack_stores_kept_crops_once_and_samples_as_an_index(tmp_path):
    shards = make_shard_files(tmp_path, speakers=("s1", "s2"), clips=2, image_size=16)
    output, counts = pack(tmp_path, shards)
    with h5py.File(output) as f:
        assert f["faces"].shape == (4 * 68, 16, 16, 3) and f["faces"].dtype == np.uint8
        assert f["mels"].shape == (4 * 241, 80)
        assert f["samples/crop"].shape == (4 * 68,)
        assert f["clips/crop_count"][()].tolist() == [68] * 4
        assert [s.decode() for s in f["clips/speaker"][()]] == ["s1", "s1", "s2", "s2"]
        assert f["crops/frame"][:68].tolist() == list(range(4, 72))
        assert (f["samples/reference"][()] == -1).all()
        assert f.attrs["layout"] == "raw" and f.attrs["image_size"] == 16
        assert f.attrs["mel_window"] == 27 and f.attrs["samples"] == 4 * 68
        assert json.loads(f.attrs["config"])["samples"]["mel_alignment"] == "centered"
        assert "libraries" in json.loads(f.attrs["provenance"])
    assert counts["dropped_samples"] == 0


def test_lipgan_alignment_counts_its_dropped_samples(tmp_path):
    shards = make_shard_files(tmp_path, clips=2, image_size=8)
    output, counts = pack(tmp_path, shards, mel_alignment="lipgan")
    assert counts["samples"] == 2 * 64 and counts["dropped_samples"] == 2 * 4
    with h5py.File(output) as f:
        assert f.attrs["dropped_samples"] == 8
        assert f["faces"].shape[0] == 2 * 68  # every kept crop stays usable as a reference


def test_clips_too_short_for_references_are_skipped_and_counted(tmp_path):
    shards = make_shard_files(tmp_path, clips=2, n_frames=14, image_size=8, mel_steps=60)
    _, counts = pack(tmp_path, shards, min_reference_distance=6)  # 10 kept crops < 12
    assert counts["skipped_clips_few_crops"] == 2 and counts["samples"] == 0


def test_test_split_stores_seeded_references_at_distance(tmp_path):
    shards = make_shard_files(tmp_path, clips=2, image_size=8)
    first, _ = pack(tmp_path, shards, split="test")
    second = tmp_path / "again.h5"
    pack_split("test", clip_list(tmp_path, shards), shards.faces, shards.mels, second,
               options=options())
    with h5py.File(first) as a, h5py.File(second) as b:
        references = a["samples/reference"][()]
        assert np.array_equal(references, b["samples/reference"][()])
        crops = a["samples/crop"][()]
        clip = a["crops/clip_index"][()]
        assert (clip[references] == clip[crops]).all()
        assert (np.abs(references - crops) >= 6).all()


def test_clip_missing_from_the_shards_is_an_input_error_and_writes_nothing(tmp_path):
    shards = make_shard_files(tmp_path, clips=2, image_size=8, no_mel=("c001",))
    with pytest.raises(InputError, match="c001 is in no mels shard"):
        pack(tmp_path, shards)
    assert not (tmp_path / "full.h5").exists()


def test_compact_layout_is_smaller_for_smooth_images(tmp_path):
    shards = make_shard_files(tmp_path, clips=1, image_size=32, pattern="patterned")
    clips = clip_list(tmp_path, shards)
    for layout in ("raw", "compact"):
        pack_split("full", clips, shards.faces, shards.mels, tmp_path / f"{layout}.h5",
                   options={**options(), "dataset": {"layout": layout, "chunk_crops": 8}})
    raw, compact = ((tmp_path / f"{layout}.h5").stat().st_size for layout in ("raw", "compact"))
    assert compact < raw / 2


def test_a_corrupted_face_shard_is_an_input_error_naming_the_file(tmp_path):
    """Bytes of a clip's gzip chunk overwritten (a bad disk, a copy cut short inside the file):
    HDF5 says only "Can't synchronously read data"; pack names the shard and the clip."""
    shards = make_shard_files(tmp_path, clips=2, image_size=8)
    faces = shards.faces[0]
    with h5py.File(faces, "a") as handle:
        crops = handle["clips/c001/crops"][()]
        del handle["clips/c001/crops"]
        handle.create_dataset("clips/c001/crops", data=crops, chunks=crops.shape,
                              compression="gzip")
        chunk = handle["clips/c001/crops"].id.get_chunk_info(0)
    with open(faces, "r+b") as raw:
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)
    with pytest.raises(InputError, match="c001") as error:
        pack(tmp_path, shards)
    assert str(faces) in str(error.value) and not (tmp_path / "full.h5").exists()
