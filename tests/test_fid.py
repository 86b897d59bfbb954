"""FID: closed-form check of the Fréchet distance, agreement with pytorch-fid, offline weights."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import smooth_faces, write_test_set
from pytorch_fid import fid_score, inception

from lipsync.core.errors import InputError, LipsyncError
from lipsync.metrics import fid, score

RANDOM_64 = {"random_weights": True, "dims": 64, "batch_size": 4}


def test_frechet_distance_equals_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    assert fid.frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
def test_statistics_and_distance_equal_pytorch_fid_on_the_same_features():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 16)).astype(np.float32)
    fake = (rng.normal(size=(300, 16)) * 1.3 + 0.2).astype(np.float32)
    ours = fid.frechet_distance(*fid.statistics(fake), *fid.statistics(real))
    # pytorch-fid's own statistics: np.mean / np.cov(rowvar=False) of its activations.
    with mock.patch.object(fid_score, "get_activations", side_effect=[fake, real]):
        theirs = fid_score.calculate_frechet_distance(
            *fid_score.calculate_activation_statistics([], None, dims=16),
            *fid_score.calculate_activation_statistics([], None, dims=16))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours > 0.1


def test_local_weights_give_the_same_features_as_pytorch_fids_own_network(tmp_path):
    torch.set_num_threads(1)
    # A stand-in weight file (seeded random FID Inception), so nothing is downloaded.
    state_dict = fid._fid_inception(None).state_dict()
    weights = tmp_path / "inception.pth"
    torch.save(state_dict, weights)
    images = smooth_faces(3, seed=0)
    ours = fid.build_inception({"weights": str(weights), "sha256": None})  # a stand-in file
    with mock.patch.object(inception, "load_state_dict_from_url", return_value=state_dict):
        theirs = inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    expected = theirs(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)[0]
    ours_features = fid.features(images, ours, "cpu", batch_size=2)
    assert ours_features.shape == (3, 2048)
    assert np.allclose(ours_features, expected.squeeze(-1).squeeze(-1).detach().numpy(),
                       atol=1e-5)


def test_missing_weights_name_the_config_key_and_the_download_command(tmp_path):
    missing = tmp_path / "pt_inception.pth"
    with pytest.raises(LipsyncError) as error:
        fid.build_inception({"weights": str(missing), "url": "https://example.org/w.pth"})
    message = str(error.value)
    assert "evaluate.fid.weights" in message and "evaluate.fid.url" in message
    assert f"lipsync download-weights --url https://example.org/w.pth --output {missing}" in message


def test_weights_with_the_wrong_sha256_are_refused(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not the weights")
    with pytest.raises(InputError, match="evaluate.fid.sha256"):
        fid.build_inception({"weights": str(weights), "sha256": "0" * 64})


def test_random_weights_are_seeded_and_labelled_not_comparable():
    images = smooth_faces(2, seed=3)
    first = fid.features(images, fid.build_inception(RANDOM_64), "cpu")
    second = fid.features(images, fid.build_inception(RANDOM_64), "cpu")
    assert np.array_equal(first, second) and first.shape == (2, 64)
    assert first.std() > 1e-3  # well-scaled features, not vanishing activations
    assert fid.labels(RANDOM_64) == [fid.RANDOM_WEIGHTS_LABEL]
    assert fid.labels({"random_weights": False}) == []
    assert fid.protocol(RANDOM_64)["weights"] == {"weights": "random",
                                                  "seed": fid.RANDOM_WEIGHTS_SEED}


def test_reference_data_run_offline_and_record_n_protocol_and_features(tmp_path):
    torch.set_num_threads(1)
    test_path = tmp_path / "test.h5"
    faces = write_test_set(test_path)
    output = tmp_path / "fid.npz"
    score.write_reference("fid", test_path, output, options={"fid": RANDOM_64})
    reference = score.load_reference(output)
    assert int(reference["n"]) == len(faces) and reference["mu"].shape == (64,)
    assert reference["sigma"].shape == (64, 64) and reference["features"].shape == (12, 64)
    protocol = json.loads(str(reference["protocol"]))
    assert str(reference["key"]) == score.protocol_key(fid.protocol(RANDOM_64))
    assert protocol["weights"]["weights"] == "random"
    expected = fid.statistics(fid.features(faces, fid.build_inception(RANDOM_64), "cpu"))
    assert np.allclose(reference["mu"], expected[0], atol=1e-6)
    assert np.allclose(reference["sigma"], expected[1], atol=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_fewer_images_than_dims_is_warned_about():
    assert "fewer than the 2048" in fid.small_sample_warning(100, 2048)
    assert fid.small_sample_warning(2048, 2048) is None


def test_unknown_dims_name_the_config_key():
    with pytest.raises(LipsyncError, match="evaluate.fid.dims"):
        fid.settings({"dims": 1000})
