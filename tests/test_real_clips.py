"""The data half on real GRID footage: the three sample clips of ../shared/grid-samples, three
speakers, through faces, mels and packing, with a contact sheet for a person to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import h5py
import pandas as pd
import pytest

from lipsync.data import audio, faces, pack
from lipsync.data.manifest import ClipEntry, write_manifest
from lipsync.data.sheets import dataset_contact_sheet

CLIPS = {"bbaf2n": "s1", "brbk7n": "s3", "swwp2s": "s2"}  # clip -> speaker (sample README)
FACES = {"faces": {"detector": "opencv", "s3fd_weights": "", "padding": {}, "image_size": 96,
                   "smoothing_frames": 5, "detect_every": 1, "min_coverage": 0.9,
                   "opencv": {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 60}},
         "video": {"fps": 25, "frames_per_clip": 75}}
AUDIO = {"audio": {"sample_rate": 16000, "n_fft": 800, "hop_length": 200, "win_length": 800,
                   "n_mels": 80, "fmin": 55, "fmax": 7600, "preemphasis": 0.97,
                   "ref_level_db": 20, "min_level_db": -100, "max_abs_value": 4.0},
         "source": "track"}
PACK = {"samples": {"edge_frames": 4, "mel_window": 27, "mel_alignment": "centered",
                    "min_reference_distance": 6},
        "dataset": {"layout": "raw", "chunk_crops": 64},
        "audio": {"sample_rate": 16000, "hop_length": 200}, "video": {"fps": 25}, "seed": 0}


@pytest.fixture(scope="module")
def packed_samples(grid_samples, tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    faces_files, mel_files, coverage = [], [], []
    for clip, speaker in CLIPS.items():
        manifest = folder / f"{speaker}.tsv"
        write_manifest(manifest, [ClipEntry(speaker, clip, str(grid_samples / f"{clip}.mpg"),
                                            None, None)])
        faces_files.append(folder / f"faces-{speaker}.h5")
        coverage.append(folder / f"coverage-{speaker}.tsv")
        mel_files.append(folder / f"mels-{speaker}.h5")
        faces.extract_shard(manifest, 0, 0, faces_files[-1], coverage[-1], options=FACES)
        audio.compute_shard(manifest, 0, 0, mel_files[-1], options=AUDIO)
    clips = folder / "test.tsv"
    pd.DataFrame({"speaker": list(CLIPS.values()), "clip": list(CLIPS)}).to_csv(
        clips, sep="\t", index=False)
    output = folder / "test.h5"
    pack.pack_split("test", clips, faces_files, mel_files, output, options=PACK)
    return output, coverage, mel_files


def test_a_face_is_found_in_every_frame_of_real_clips(packed_samples):
    _, coverage, _ = packed_samples
    table = pd.concat(pd.read_csv(path, sep="\t") for path in coverage)
    assert (table["status"] == "ok").all()
    assert (table["frames"] == 75).all() and (table["detected"] == 75).all()


def test_real_clips_give_80_by_241_mels_and_68_samples_each(packed_samples):
    output, _, mel_files = packed_samples
    for path in mel_files:
        with h5py.File(path) as handle:
            (clip,) = handle["clips"]
            assert handle["clips"][clip]["mel"].shape == (80, 241)
    with h5py.File(output) as handle:
        assert list(handle["clips/sample_count"][:]) == [68, 68, 68]
        assert handle["faces"].shape == (3 * 68, 96, 96, 3)


def test_contact_sheet_of_real_crops_for_a_person_to_look_at(packed_samples, tmp_path):
    output, _, _ = packed_samples
    sheet = tmp_path / "grid_samples_contact_sheet.png"
    dataset_contact_sheet(output, sheet)
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] >= 3 * 96
    # Keep a copy where a person can open it: $LIPSYNC_TEST_ARTIFACTS or results/test-artifacts.
    artifacts = Path(os.environ.get("LIPSYNC_TEST_ARTIFACTS",
                                    Path(__file__).resolve().parents[1] / "results"
                                    / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy2(sheet, artifacts / sheet.name)
