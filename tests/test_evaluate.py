"""score_run end to end on a small test set and generated sets written here (HDF5 contract)."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lipsync.errors import InputError, LipsyncError
from lipsync.metrics import evaluate, fid
from lipsync.metrics.testset import TestSet

CLIPS = [("s1", "bbaf2n"), ("s2", "lgaz8p")]
CROPS_PER_CLIP = 6
# Offline plumbing: seeded random Inception, first block (64-d) so tests take seconds.
EVALUATE_OPTIONS = {"fid": {"random_weights": True, "dims": 64, "batch_size": 8},
                    "ssim_psnr": {"backend": "torch", "data_range": 255, "batch_size": 5}}


def smooth_faces(count: int, seed: int, size: int = 96) -> np.ndarray:
    """Face-sized uint8 RGB images with smooth structure plus noise (so SSIM is not trivial)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 225, (count, 12, 12, 3)).astype(np.float64)
    images = coarse.repeat(size // 12, axis=1).repeat(size // 12, axis=2)
    images += rng.normal(0, 12, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def write_test_set(path, *, reference_self: tuple[int, ...] = (0,), seed: int = 0) -> np.ndarray:
    """A test split per docs/ARCHITECTURE.md; samples = every crop; returns the faces.

    Each sample's fixed reference is three crops later in its clip, except the samples in
    `reference_self`, whose reference is their own target (the identity run then copies it).
    """
    n_crops = len(CLIPS) * CROPS_PER_CLIP
    faces = smooth_faces(n_crops, seed)
    clip_index = np.repeat(np.arange(len(CLIPS)), CROPS_PER_CLIP).astype(np.int32)
    frames = np.tile(np.arange(4, 4 + CROPS_PER_CLIP), len(CLIPS)).astype(np.int32)
    crops = np.arange(n_crops, dtype=np.int64)
    within = crops % CROPS_PER_CLIP
    reference = crops - within + (within + 3) % CROPS_PER_CLIP
    reference[list(reference_self)] = crops[list(reference_self)]
    with h5py.File(path, "w") as handle:
        handle["faces"] = faces
        handle["clips/speaker"] = np.array([s for s, _ in CLIPS], dtype=object)
        handle["clips/clip"] = np.array([c for _, c in CLIPS], dtype=object)
        handle["clips/crop_start"] = np.arange(len(CLIPS), dtype=np.int64) * CROPS_PER_CLIP
        handle["clips/crop_count"] = np.full(len(CLIPS), CROPS_PER_CLIP, dtype=np.int64)
        handle["crops/clip_index"] = clip_index
        handle["crops/frame"] = frames
        handle["samples/crop"] = crops
        handle["samples/mel_start"] = np.zeros(n_crops, dtype=np.int64)
        handle["samples/reference"] = reference.astype(np.int64)
        handle.attrs["layout"] = "raw"
        handle.attrs["image_size"] = 96
    return faces


def write_generated(path, faces: np.ndarray, model: str = "lipgan") -> None:
    with h5py.File(path, "w") as handle:
        handle["faces"] = faces
        handle.attrs["model"] = model
        handle.attrs["checkpoint"] = f"train/{path.stem}/generator.pt"


def noisy(faces: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(faces + rng.normal(0, sigma, faces.shape), 0, 255).astype(np.uint8)


def identity_faces(test_path) -> np.ndarray:
    with h5py.File(test_path, "r") as handle:
        return handle["faces"][()][handle["samples/reference"][()]]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A test set, its FID reference and one scored noisy run."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("evaluate")
    test_path = folder / "test.h5"
    faces = write_test_set(test_path)
    generated = folder / "lipgan-small.h5"
    write_generated(generated, noisy(faces, 10, seed=1))
    reference = folder / "fid_reference.npz"
    fid.reference_statistics(test_path, reference, options=EVALUATE_OPTIONS["fid"])
    summary = evaluate.score_run(generated, test_path, reference, folder / "m" / "scores.tsv",
                                 folder / "m" / "summary.json", options=EVALUATE_OPTIONS)
    return folder, faces, summary


def test_score_run_writes_per_sample_scores_equal_to_scikit_image(scored):
    folder, faces, _ = scored
    scores = pd.read_csv(folder / "m" / "scores.tsv", sep="\t")
    generated = noisy(faces, 10, seed=1)
    assert list(scores.columns) == ["sample", "speaker", "clip", "frame", "ssim", "psnr"]
    assert scores["sample"].tolist() == list(range(len(faces)))
    assert scores["speaker"].tolist()[:1] + scores["speaker"].tolist()[-1:] == ["s1", "s2"]
    assert scores["clip"].iloc[-1] == "lgaz8p" and scores["frame"].iloc[0] == 4
    for k in (0, 7):
        assert scores["ssim"][k] == pytest.approx(structural_similarity(
            generated[k], faces[k], channel_axis=-1, data_range=255), abs=1e-6)
        assert scores["psnr"][k] == pytest.approx(peak_signal_noise_ratio(
            faces[k], generated[k], data_range=255), abs=1e-9)


def test_summary_reports_fid_with_n_protocols_and_random_weight_label(scored):
    folder, faces, summary = scored
    on_disk = json.loads((folder / "m" / "summary.json").read_text())
    assert on_disk["run"] == "lipgan-small" and on_disk["model"] == "lipgan"
    assert on_disk["fid"]["n_generated"] == on_disk["fid"]["n_reference"] == len(faces)
    assert on_disk["fid"]["value"] > 0
    assert fid.RANDOM_WEIGHTS_LABEL in on_disk["labels"]
    assert on_disk["flags"]["random_weights"] is True
    # 12 images < 64 dims: warned, not hidden.
    assert on_disk["flags"]["fid_fewer_images_than_dims"] is True
    assert any("fewer than the 64" in w for w in on_disk["warnings"])
    for metric in ("fid", "ssim", "psnr"):
        assert on_disk[metric]["protocol"]["sample_count"] == len(faces)
    assert on_disk["ssim"]["protocol"]["data_range"] == 255
    assert on_disk["fid"]["protocol"]["resize"].startswith("bilinear to 299x299")
    ssim = pd.read_csv(folder / "m" / "scores.tsv", sep="\t")["ssim"]
    assert on_disk["ssim"]["mean"] == pytest.approx(ssim.mean())
    assert on_disk["ssim"]["min"] == pytest.approx(ssim.min())


def test_identity_frame_equal_to_ground_truth_has_infinite_psnr_left_out_of_summary(scored):
    folder, faces, _ = scored
    write_generated(folder / "identity.h5", identity_faces(folder / "test.h5"), model="identity")
    summary = evaluate.score_run(folder / "identity.h5", folder / "test.h5",
                                 folder / "fid_reference.npz", folder / "id" / "scores.tsv",
                                 folder / "id" / "summary.json", options=EVALUATE_OPTIONS)
    psnr = pd.read_csv(folder / "id" / "scores.tsv", sep="\t")["psnr"]
    assert np.isinf(psnr[0]) and np.isfinite(psnr[1:]).all()
    assert summary["psnr"]["n_infinite"] == 1 and summary["psnr"]["n_finite"] == len(faces) - 1
    assert summary["psnr"]["mean"] == pytest.approx(psnr[1:].mean())
    assert summary["ssim"]["max"] == pytest.approx(1.0)
    json.loads((folder / "id" / "summary.json").read_text())  # strict JSON: no Infinity


def test_generated_set_with_wrong_sample_count_is_refused(scored, tmp_path):
    folder, faces, _ = scored
    short = tmp_path / "short.h5"
    write_generated(short, faces[:-1])
    with pytest.raises(InputError, match="11 generated faces .* 12 samples"):
        evaluate.score_run(short, folder / "test.h5", folder / "fid_reference.npz",
                           tmp_path / "s.tsv", tmp_path / "s.json", options=EVALUATE_OPTIONS)
    assert not (tmp_path / "s.tsv").exists()


def test_reference_made_under_other_fid_settings_is_refused(scored, tmp_path):
    folder, faces, _ = scored
    other = {**EVALUATE_OPTIONS, "fid": {**EVALUATE_OPTIONS["fid"], "dims": 192}}
    with pytest.raises(InputError, match="other FID settings"):
        evaluate.score_run(folder / "lipgan-small.h5", folder / "test.h5",
                           folder / "fid_reference.npz", tmp_path / "s.tsv", tmp_path / "s.json",
                           options=other)


def test_reference_of_another_test_set_is_refused(scored, tmp_path):
    folder, faces, _ = scored
    other_test = tmp_path / "test.h5"
    write_test_set(other_test, seed=5)
    with pytest.raises(InputError, match="other ground-truth faces"):
        evaluate.score_run(folder / "lipgan-small.h5", other_test, folder / "fid_reference.npz",
                           tmp_path / "s.tsv", tmp_path / "s.json", options=EVALUATE_OPTIONS)


def test_compact_layout_png_faces_read_the_same_as_raw(tmp_path):
    raw, compact = tmp_path / "raw.h5", tmp_path / "compact.h5"
    faces = write_test_set(raw)
    write_test_set(compact)
    with h5py.File(compact, "a") as handle:
        del handle["faces"]
        encoded = handle.create_dataset("faces", (len(faces),), dtype=h5py.vlen_dtype(np.uint8))
        for k, face in enumerate(faces):  # lossless PNG of the RGB crop, stored BGR by OpenCV
            encoded[k] = cv2.imencode(".png", np.ascontiguousarray(face[..., ::-1]))[1].ravel()
        handle.attrs["layout"] = "compact"
    with TestSet(compact) as data:
        assert data.image_shape == (96, 96, 3)
        assert np.array_equal(data.ground_truth(0, len(faces)), faces)
        assert np.array_equal(data.references_of(np.array([5, 1, 5])),
                              faces[[2, 4, 2]])  # reference = three crops later in the clip
    with h5py.File(compact, "a") as handle:
        handle["faces"][3] = np.frombuffer(b"not a png", dtype=np.uint8)
    with TestSet(compact) as data, pytest.raises(InputError, match="crop 3 .* not a decodable"):
        data.ground_truth(0, 6)


def test_missing_test_set_names_the_file(tmp_path):
    with pytest.raises(LipsyncError, match="nothere.h5: file not found"):
        fid.reference_statistics(tmp_path / "nothere.h5", tmp_path / "r.npz",
                                 options=EVALUATE_OPTIONS["fid"])
