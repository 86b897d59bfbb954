"""Packing a split: layout of the HDF5 file, counts of dropped samples and skipped clips."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import make_shard_files

from lipsync.core.errors import InputError, LipsyncError
from lipsync.data.pack import pack_split


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


def test_jpeg_layout_stores_training_crops_as_jpeg_and_keeps_the_test_split_lossless(tmp_path):
    from skimage.metrics import structural_similarity

    from lipsync.data.dataset import LipSyncDataset

    shards = make_shard_files(tmp_path, clips=2, image_size=48, pattern="photo")
    clips = clip_list(tmp_path, shards)
    paths = {}
    for split, layout in (("full", "raw"), ("train", "jpeg"), ("test", "jpeg")):
        paths[split] = tmp_path / f"{split}.h5"
        pack_split(split, clips, shards.faces, shards.mels, paths[split],
                   options={**options(), "dataset": {"layout": layout, "jpeg_quality": 90}})
    with h5py.File(paths["train"]) as f:
        assert f.attrs["layout"] == "jpeg" and f["faces"].attrs["encoding"] == "jpeg"
        assert bytes(f["faces"][0][:2]) == b"\xff\xd8"  # the JPEG signature
    with h5py.File(paths["test"]) as f:
        assert f.attrs["layout"] == "raw" and f["faces"].dtype == np.uint8
    with h5py.File(paths["full"]) as raw_file, h5py.File(paths["train"]) as jpeg_file:
        raw_bytes = raw_file["faces"].nbytes
        jpeg_bytes = sum(len(buffer) for buffer in jpeg_file["faces"][()])
    assert jpeg_bytes < raw_bytes / 3, (jpeg_bytes, raw_bytes)  # measured 1/3.9
    raw, jpeg = LipSyncDataset(paths["full"]), LipSyncDataset(paths["train"])
    crops = np.arange(0, 136, 17)
    exact, decoded = raw.read_faces(crops), jpeg.read_faces(crops)
    # photo-like crops at quality 90: measured SSIM 0.981-0.984 to the raw crop
    similarity = min(structural_similarity(a, b, channel_axis=-1) for a, b in
                     zip(exact, decoded, strict=True))
    assert similarity > 0.9, similarity
    assert len(jpeg) == len(raw)


def test_jpeg_quality_out_of_range_is_refused(tmp_path):
    shards = make_shard_files(tmp_path, clips=1, image_size=16)
    with pytest.raises(LipsyncError, match="dataset.jpeg_quality: 0"):
        pack_split("train", clip_list(tmp_path, shards), shards.faces, shards.mels,
                   tmp_path / "out.h5", options={**options(),
                                                 "dataset": {"layout": "jpeg", "jpeg_quality": 0}})


def test_a_corrupt_jpeg_crop_is_an_input_error_naming_file_and_crop():
    from lipsync.data.pack import decode_crop

    with pytest.raises(InputError, match=r"train\.h5.*crop 7 of /faces is not a decodable JPEG"):
        decode_crop(np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8), "train.h5", 7)


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
