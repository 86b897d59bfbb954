"""Generating the test set's faces: identity baseline exactly, trained generators by shape."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_shard_files

from lipsync.data.pack import pack_split
from lipsync.models import registry
from lipsync.tools.generate import generate
from lipsync.training.loop import export_generator


@pytest.fixture
def test_set(tmp_path):
    shards = make_shard_files(tmp_path, clips=2, n_frames=20, mel_steps=70)
    clips = tmp_path / "clips.tsv"
    pd.DataFrame([("s1", c) for c in shards.clips["s1"]], columns=["speaker", "clip"]).to_csv(
        clips, sep="\t", index=False)
    path = tmp_path / "test.h5"
    pack_split("test", clips, shards.faces, shards.mels, path, options={})
    return path


def stored_references(test_set):
    with h5py.File(test_set, "r") as handle:
        return handle["faces"][:][handle["samples/reference"][:]]


def test_identity_returns_the_stored_reference_frames_exactly(tmp_path, test_set):
    output = tmp_path / "identity.h5"
    generate("identity", test_set, output, sheet=tmp_path / "identity.png",
             options={"batch_size": 5})
    with h5py.File(output, "r") as handle:
        faces = handle["faces"][:]
        assert handle.attrs["model"] == "identity"
    np.testing.assert_array_equal(faces, stored_references(test_set))
    assert (tmp_path / "identity.png").stat().st_size > 0


def test_generator_checkpoint_gives_one_uint8_face_per_test_sample(tmp_path, test_set):
    torch.manual_seed(0)
    pair = registry.build("lipgan", {"width": 0.0625})
    checkpoint = export_generator(tmp_path / "generator.pt", pair.generator, "lipgan",
                                  pair.options, {}, step=0, samples=0)
    output = tmp_path / "lipgan.h5"
    generate(checkpoint, test_set, output, options={"batch_size": 7})
    n = len(stored_references(test_set))
    with h5py.File(output, "r") as handle:
        faces = handle["faces"][:]
        assert handle.attrs["model"] == "lipgan"
        assert handle.attrs["checkpoint"] == str(checkpoint.resolve())
    assert faces.shape == (n, 96, 96, 3) and faces.dtype == np.uint8
    assert not np.array_equal(faces, stored_references(test_set))  # not a copy
