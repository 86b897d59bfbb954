"""Identity similarity (CSIM) on real GRID crops, and LMD with CSIM scored through the registry:
1 for a face against itself, lower against another speaker, a per-clip subsample of frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import score_all, write_generated, write_test_set
from test_landmarks import desynced, fixed_box_crops

from lipsync.core.errors import LipsyncError
from lipsync.metrics import dlib_resnet, identity

CROPS_PER_CLIP = 12


@pytest.fixture(scope="module")
def speaker_crops(grid_samples) -> dict[str, np.ndarray]:
    """Frames 20-31 of one clip each of GRID speakers s1, s3 and s2 (../shared/grid-samples)."""
    return {speaker: fixed_box_crops(grid_samples / f"{clip}.mpg", slice(20, 20 + CROPS_PER_CLIP))
            for clip, speaker in (("bbaf2n", "s1"), ("brbk7n", "s3"), ("swwp2s", "s2"))}


@pytest.fixture(scope="module")
def embeddings(speaker_crops) -> dict[str, np.ndarray]:
    with identity.mapper({}) as faces:
        return {speaker: faces(crops[[0, 6]]) for speaker, crops in speaker_crops.items()}


def test_csim_of_a_face_against_itself_is_one(speaker_crops, embeddings):
    with identity.mapper({}) as faces:
        again = faces(speaker_crops["s1"][[0, 6]].copy())
    assert identity.cosine(again, embeddings["s1"]) == pytest.approx([1.0, 1.0], abs=1e-6)


def test_csim_is_lower_against_another_speaker_than_another_frame_of_the_same(embeddings, grid_s1):
    s1_other_clip = fixed_box_crops(sorted((grid_s1 / "s1").glob("*.mpg"))[0], slice(30, 31))
    with identity.mapper({}) as faces:
        same_speaker = identity.cosine(faces(s1_other_clip), embeddings["s1"][:1])[0]
    within_clip = identity.cosine(embeddings["s1"][1:], embeddings["s1"][:1])[0]
    for other in ("s2", "s3"):
        against_other = identity.cosine(embeddings[other], embeddings["s1"])
        assert against_other.max() < min(same_speaker, within_clip) - 0.05, (
            f"s1 vs {other}: {against_other}, s1 vs s1: {same_speaker}, {within_clip}")


def test_subsample_takes_evenly_spaced_samples_of_each_clip():
    samples = pd.DataFrame({"speaker": ["s1"] * 10 + ["s2"] * 3,
                            "clip": ["a"] * 10 + ["b"] * 3, "frame": list(range(13))})
    assert identity.subsample(samples, 4).tolist() == [0, 3, 6, 9, 10, 11, 12]
    assert identity.subsample(samples, 0).tolist() == list(range(13))
    with pytest.raises(LipsyncError, match=r"evaluate\.csim\.frames_per_clip"):
        identity.settings({"frames_per_clip": -1})


def test_missing_model_file_names_the_config_key(tmp_path):
    with pytest.raises(LipsyncError, match=r"evaluate\.csim\.model"):
        identity.protocol({"model": str(tmp_path / "missing.dat")})
    with pytest.raises(LipsyncError, match=r"evaluate\.csim\.shape_predictor"):
        identity.mapper({"shape_predictor": str(tmp_path / "missing.dat")})


@pytest.fixture(scope="module")
def real_test_set(speaker_crops, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmd-csim")
    test_path = folder / "test.h5"
    faces = np.concatenate([speaker_crops["s1"], speaker_crops["s3"]])
    write_test_set(test_path, faces=faces, clips=[("s1", "bbaf2n"), ("s3", "brbk7n")],
                   crops_per_clip=CROPS_PER_CLIP)
    return folder, test_path, faces


OPTIONS = {"metrics": ["lmd", "csim", "ssim"], "csim": {"frames_per_clip": 3},
           "bootstrap": {"resamples": 50}, "batch_size": 8}


def test_lmd_and_csim_scored_through_the_registry_on_real_crops(real_test_set):
    folder, test_path, faces = real_test_set
    # generated = ground truth, except clip s3's lower halves come from 3 frames later
    generated_faces = faces.copy()
    s3 = faces[CROPS_PER_CLIP:]
    generated_faces[CROPS_PER_CLIP:CROPS_PER_CLIP + 9] = desynced(s3, 3, 9)
    generated = folder / "desync.h5"
    write_generated(generated, generated_faces)
    summary = score_all(folder, test_path, generated, OPTIONS)
    scores = pd.read_csv(folder / "metrics" / "desync" / "scores.tsv", sep="\t")
    assert {"lmd", "mouth_opening_error", "csim"} <= set(scores.columns)
    s1, s3_scores = scores[scores["speaker"] == "s1"], scores[scores["speaker"] == "s3"]
    assert (s1["lmd"] == 0).all() and (s1["mouth_opening_error"] == 0).all()
    assert s3_scores["lmd"].iloc[:9].mean() > 0.3
    scored = scores["csim"].notna()
    assert scored.sum() == 6  # 3 evenly spaced frames per clip
    assert scores.loc[scored, "sample"].tolist() == [0, 6, 11, 12, 18, 23]
    assert s1["csim"].dropna().tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    metrics = summary["metrics"]
    assert metrics["lmd"]["failed"] is None and metrics["csim"]["failed"] is None
    assert metrics["lmd"]["columns"]["lmd"]["unit"] == "px"
    assert metrics["lmd"]["protocol"]["backend"] == "dlib"
    assert metrics["csim"]["protocol"]["frames_per_clip"] == 3
    assert metrics["csim"]["missing"] == {
        "not in the subsample (evaluate.csim.frames_per_clip = 3)": 2 * CROPS_PER_CLIP - 6}
    assert metrics["csim"]["columns"]["csim"]["n_finite"] == 6


def test_a_missing_predictor_fails_only_lmd_with_the_config_key(real_test_set, tmp_path):
    folder, test_path, faces = real_test_set
    generated = tmp_path / "identity.h5"
    write_generated(generated, faces)
    options = {**OPTIONS, "metrics": ["lmd", "ssim"],
               "lmd": {"predictor": str(tmp_path / "missing.dat")}}
    summary = score_all(tmp_path, test_path, generated, options)
    assert "evaluate.lmd.predictor" in summary["metrics"]["lmd"]["failed"]
    assert summary["metrics"]["ssim"]["columns"]["ssim"]["value"] == pytest.approx(1.0)


def test_a_blank_generated_frame_is_nan_with_its_reason_counted(real_test_set):
    folder, test_path, faces = real_test_set
    generated_faces = faces.copy()
    generated_faces[0] = 128  # sample 0 is the first of clip s1's subsample
    generated = folder / "blank.h5"
    write_generated(generated, generated_faces)
    summary = score_all(folder, test_path, generated, OPTIONS)
    scores = pd.read_csv(folder / "metrics" / "blank" / "scores.tsv", sep="\t")
    assert np.isnan(scores["lmd"][0]) and np.isnan(scores["csim"][0])
    assert scores["lmd"][1:].notna().all()
    metrics = summary["metrics"]
    assert metrics["lmd"]["missing"] == {
        "generated frame: blank frame (no face to place landmarks on)": 1}
    assert metrics["csim"]["missing"]["generated frame: blank (no face)"] == 1
    assert metrics["lmd"]["columns"]["lmd"]["n_finite"] == len(faces) - 1


def test_torch_backend_equals_dlibs_descriptors(speaker_crops):
    # dlib's own compute_face_descriptor is the reference; measured max |diff| 3e-7 on these
    # crops (float32 summation order), descriptors' norms ~1.4.
    crops = np.concatenate([crops[[0, 5, 11]] for crops in speaker_crops.values()])
    with identity.mapper({"backend": "dlib"}) as reference, identity.mapper({}) as ours:
        expected, got = reference(crops), ours(crops)
    assert np.abs(got - expected).max() <= 1e-5
    assert identity.protocol({})["backend"] != identity.protocol({"backend": "dlib"})["backend"]


def test_a_file_that_is_not_dlibs_network_names_the_file(tmp_path):
    bad = tmp_path / "not-a-network.dat"
    bad.write_bytes(b"\x01\x01" * 100)
    with pytest.raises(LipsyncError, match="not-a-network.dat"):
        dlib_resnet.load(bad)
