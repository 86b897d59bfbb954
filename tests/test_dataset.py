"""LipSyncDataset over packed files: exact round trip from the shards, references, workers, errors."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_shard_files
from torch.utils.data import DataLoader

from lipsync.core.errors import InputError
from lipsync.data.dataset import LipSyncDataset, collate
from lipsync.data.pack import pack_split
from lipsync.data.samples import mel_steps_per_frame, mel_window_starts
from lipsync.data.sheets import dataset_contact_sheet

SIZE = 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    files = make_shard_files(folder, speakers=("s1", "s2"), clips=2, image_size=SIZE,
                             mel_steps_by_clip={"c001": 200})  # s*/c001: audio shorter
    rows = [(s, c) for s, clips in files.clips.items() for c in clips]
    files.clips_tsv = folder / "clips.tsv"
    pd.DataFrame(rows, columns=["speaker", "clip"]).to_csv(files.clips_tsv, sep="\t", index=False)
    return files


def packed(shards, folder, split="full", layout="raw"):
    output = folder / f"{split}-{layout}.h5"
    if not output.exists():
        pack_split(split, shards.clips_tsv, shards.faces, shards.mels, output,
                   options={"samples": {}, "dataset": {"layout": layout, "chunk_crops": 8},
                            "audio": {}, "video": {}, "seed": 0})
    return output


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("packed")


def shard_truth(shards, speaker, clip):
    with h5py.File(shards.faces[0].parent.parent / speaker / "0.h5") as f:
        crops = f[f"clips/{clip}/crops"][()]
    with h5py.File(shards.mels[0].parent.parent / speaker / "0.h5") as f:
        mel = f[f"clips/{clip}/mel"][()]
    return crops, mel


def test_items_reproduce_the_shard_crops_and_mel_windows_exactly(shards, folder):
    dataset = LipSyncDataset(packed(shards, folder))
    with h5py.File(dataset.path) as f:
        clip_names = [c.decode() for c in f["clips/clip"][()]]
        speakers = [s.decode() for s in f["clips/speaker"][()]]
        sample_counts = f["clips/sample_count"][()]
        crop_frame = f["crops/frame"][()]
        sample_crop = f["samples/crop"][()]
        crop_clip = f["crops/clip_index"][()]
    # c001 has 200 mel steps: centred windows past step 200 are dropped
    starts = mel_window_starts(np.arange(4, 72), steps_per_frame=mel_steps_per_frame(16000, 200,
                               25), mel_window=27, alignment="centered", edge_frames=4)
    assert sample_counts.tolist() == [68, int((starts + 27 <= 200).sum())] * 2
    assert len(dataset) == sample_counts.sum()
    for index in [0, 67, 68, len(dataset) - 1, 100]:
        item = dataset[index]
        frame = crop_frame[sample_crop[index]]
        k = crop_clip[sample_crop[index]]
        crops, mel = shard_truth(shards, speakers[k], clip_names[k])
        expected = torch.from_numpy(crops[frame]).permute(2, 0, 1).float() / 255
        assert torch.equal(item["target"], expected)
        assert torch.equal(item["generator_input"][3:, :SIZE // 2], expected[:, :SIZE // 2])
        assert (item["generator_input"][3:, SIZE // 2:] == 0).all()
        assert torch.equal(item["generator_input"][:3], item["reference"])
        s = round(3.2 * frame) - 13
        assert torch.equal(item["mel"][0], torch.from_numpy(mel[:, s:s + 27]))
        assert item["mel"].shape == (1, 80, 27) and item["mel"].dtype == torch.float32


def test_training_references_are_random_per_epoch_but_reproducible(shards, folder):
    dataset = LipSyncDataset(packed(shards, folder), seed=5)
    assert not dataset.fixed_reference
    indices = np.arange(len(dataset))
    epoch0 = dataset.references(indices)
    assert np.array_equal(epoch0, LipSyncDataset(dataset.path, seed=5).references(indices))
    dataset.set_epoch(1)
    epoch1 = dataset.references(indices)
    assert (epoch0 != epoch1).mean() > 0.5
    with h5py.File(dataset.path) as f:
        crops = f["samples/crop"][()]
        clip = f["crops/clip_index"][()]
    for refs in (epoch0, epoch1):
        assert (clip[refs] == clip[crops]).all() and (np.abs(refs - crops) >= 6).all()


def test_test_references_are_fixed_across_opens_and_epochs(shards, folder):
    path = packed(shards, folder, split="test")
    first, second = LipSyncDataset(path, seed=0), LipSyncDataset(path, seed=9)
    assert first.fixed_reference
    second.set_epoch(3)
    indices = np.arange(len(first))
    assert np.array_equal(first.references(indices), second.references(indices))
    a, b = first[10], second[10]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_raw_and_compact_layouts_give_identical_items(shards, folder):
    raw = LipSyncDataset(packed(shards, folder, layout="raw"), seed=2)
    compact = LipSyncDataset(packed(shards, folder, layout="compact"), seed=2)
    indices = [5, 3, 3, 120, 0]
    a, b = collate(raw.__getitems__(indices)), collate(compact.__getitems__(indices))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_collate_matches_torch_default_collate(shards, folder):
    dataset = LipSyncDataset(packed(shards, folder), seed=2)
    batch = dataset.__getitems__([4, 1, 9])
    ours, default = collate(batch), torch.utils.data.default_collate(list(batch))
    assert ours.keys() == default.keys()
    assert all(torch.equal(ours[key], default[key]) for key in ours)


def test_dataloader_with_two_workers_sees_every_sample_once(shards, folder):
    dataset = LipSyncDataset(packed(shards, folder, split="test"))
    loader = DataLoader(dataset, batch_size=32, shuffle=False, num_workers=2, collate_fn=collate)
    targets = torch.cat([batch["target"] for batch in loader])
    assert targets.shape == (len(dataset), 3, SIZE, SIZE)
    direct = collate(dataset.__getitems__(list(range(len(dataset)))))["target"]
    assert torch.equal(targets, direct)


def test_truncated_file_is_an_input_error_naming_it(shards, folder, tmp_path):
    source = packed(shards, folder).read_bytes()
    for keep in (len(source) // 2, 1000):
        broken = tmp_path / f"broken-{keep}.h5"
        broken.write_bytes(source[:keep])
        with pytest.raises(InputError, match=str(broken)):
            LipSyncDataset(broken)


def test_contact_sheet_shows_one_row_per_clip(shards, folder, tmp_path):
    import cv2

    sheet = dataset_contact_sheet(packed(shards, folder, layout="compact"), tmp_path / "s.png",
                                  max_clips=3)
    image = cv2.imread(str(tmp_path / "s.png"))
    assert image.shape == sheet.shape
    assert image.shape[0] == 3 * (SIZE + 2) + 2



def test_uint8_items_become_the_same_model_inputs_on_the_device(shards, folder):
    from lipsync.data.dataset import model_inputs

    path = packed(shards, folder)
    floats = LipSyncDataset(path, seed=3).__getitems__([0, 5, 2])
    uint8_batch = LipSyncDataset(path, seed=3, uint8=True).__getitems__([0, 5, 2])
    assert uint8_batch.stacked["target"].dtype == torch.uint8
    assert "generator_input" not in uint8_batch.stacked
    converted = model_inputs(collate(uint8_batch), "cpu")
    for key, value in collate(floats).items():
        assert torch.equal(converted[key], value), key
