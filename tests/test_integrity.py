"""Corrupt bytes inside a readable packed file are found before a job trusts it, naming the array."""

import logging

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import make_shard_files

from lipsync.core.errors import InputError
from lipsync.data import integrity
from lipsync.data.dataset import LipSyncDataset
from lipsync.data.pack import pack_split
from lipsync.metrics.testset import TestSet


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A small test split in each layout: {layout: path}."""
    folder = tmp_path_factory.mktemp("integrity")
    shards = make_shard_files(folder, clips=2, image_size=16)
    clips = folder / "clips.tsv"
    pd.DataFrame([("s1", c) for c in shards.clips["s1"]], columns=["speaker", "clip"]).to_csv(
        clips, sep="\t", index=False)
    paths = {}
    for layout in ("raw", "compact"):
        paths[layout] = folder / f"test-{layout}.h5"
        pack_split("test", clips, shards.faces, shards.mels, paths[layout],
                   options={"dataset": {"layout": layout}})
    return paths


@pytest.fixture(autouse=True)
def forget_verified_files():
    integrity._verified.clear()  # each test's copy must be read, not remembered
    integrity._warned.clear()
    yield
    integrity._verified.clear()


def flip_middle_byte(source, output, array: str):
    """Copy `source` with one byte inverted half-way through the stored bytes of `array`."""
    data = bytearray(source.read_bytes())
    with h5py.File(source) as f:
        dataset = f[array]
        if h5py.check_vlen_dtype(dataset.dtype) is None:
            position = dataset.id.get_offset() + dataset.id.get_storage_size() // 2
        else:  # compact layout: inside the PNG of the middle crop, wherever HDF5 put it
            row = dataset[len(dataset) // 2].tobytes()
            position = data.find(row) + len(row) // 2
    data[position] ^= 0xFF
    output.write_bytes(data)
    return output


@pytest.mark.parametrize("array", ["faces", "mels", "samples/crop"])
def test_a_flipped_byte_is_reported_by_the_dataset_naming_file_and_array(packed, tmp_path, array):
    broken = flip_middle_byte(packed["raw"], tmp_path / "broken.h5", array)
    with pytest.raises(InputError, match=f"/{array} is corrupt") as error:
        LipSyncDataset(broken)
    assert error.value.path == str(broken)


@pytest.mark.parametrize("array", ["faces", "mels", "samples/crop"])
def test_a_flipped_byte_is_reported_by_the_test_set_reader_as_corruption(packed, tmp_path, array):
    broken = flip_middle_byte(packed["raw"], tmp_path / "broken.h5", array)
    with pytest.raises(InputError, match=f"/{array} is corrupt") as error:
        TestSet(broken)
    assert error.value.path == str(broken)
    assert "fid-reference" not in str(error.value)  # repacking, not a new reference, fixes it


def test_a_flipped_byte_inside_a_compact_png_is_reported(packed, tmp_path):
    broken = flip_middle_byte(packed["compact"], tmp_path / "broken.h5", "faces")
    with pytest.raises(InputError, match="/faces is corrupt"):
        LipSyncDataset(broken)
    with pytest.raises(InputError, match="/faces is corrupt"):
        TestSet(broken)


def test_intact_files_of_both_layouts_verify_and_read(packed):
    for path in packed.values():
        assert integrity.verify(path)
        assert len(LipSyncDataset(path)) == 2 * 68
        with TestSet(path) as data:
            assert data.ground_truth(0, 3).shape == (3, 16, 16, 3)


def without_checksums(source, output):
    """A copy as the packer wrote it before checksums were recorded."""
    output.write_bytes(source.read_bytes())
    with h5py.File(output, "r+") as f:
        del f.attrs[integrity.FILE_ATTRIBUTE]
        f.visititems(lambda name, item: [item.attrs.__delitem__(key) for key in
                                         ("checksum", "checksum_block_bytes", "checksums")]
                     if isinstance(item, h5py.Dataset) else None)
    return output


def test_a_file_packed_before_checksums_opens_with_a_warning(packed, tmp_path, caplog):
    old = without_checksums(packed["raw"], tmp_path / "old.h5")
    with caplog.at_level(logging.WARNING):
        assert len(LipSyncDataset(old)) == 2 * 68
    assert any(str(old) in r.getMessage() and "no checksums" in r.getMessage()
               for r in caplog.records)


def test_an_index_pointing_outside_faces_names_file_and_array_without_checksums(packed,
                                                                                   tmp_path):
    old = without_checksums(packed["raw"], tmp_path / "old.h5")
    with h5py.File(old, "r+") as f:
        f["samples/crop"][5] = 10**9  # what a flipped high byte does to an int64
    with pytest.raises(InputError, match="/samples/crop is corrupt") as error:
        LipSyncDataset(old)
    assert error.value.path == str(old)


def test_block_checksums_do_not_depend_on_how_the_stream_is_cut():
    data = np.random.default_rng(0).integers(0, 256, 10_000, np.uint8)
    whole, pieces = integrity.BlockChecksums(1024), integrity.BlockChecksums(1024)
    whole.update(data)
    for start in range(0, len(data), 777):
        pieces.update(data[start:start + 777])
    assert np.array_equal(whole.digest(), pieces.digest()) and len(whole.digest()) == 10


def test_blocks_grow_so_the_checksums_of_a_huge_array_fit_an_attribute():
    assert integrity.block_bytes_for(1000) == integrity.MIN_BLOCK_BYTES
    gridfull_faces = 2_190_517 * 96 * 96 * 3
    assert gridfull_faces / integrity.block_bytes_for(gridfull_faces) <= integrity.MAX_BLOCKS
    assert 10 * gridfull_faces / integrity.block_bytes_for(10 * gridfull_faces) <= integrity.MAX_BLOCKS
