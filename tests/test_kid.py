"""KID: clean-fid's formula on the same features, and unbiasedness for one distribution."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.metrics.kid import kernel_inception_distance, polynomial_mmd


def test_kid_equals_clean_fids_kernel_distance_on_the_same_features():
    cleanfid = pytest.importorskip("cleanfid.fid")
    rng = np.random.default_rng(0)
    generated = rng.normal(0.2, 1.0, (60, 16))
    real = rng.normal(0.0, 1.0, (60, 16))
    # One subset holding every feature: the subset draw only permutes, which MMD ignores, so both
    # implementations compute exactly the same number.
    ours, _ = kernel_inception_distance(generated, real, subsets=1, subset_size=60)
    theirs = cleanfid.kernel_distance(generated, real, num_subsets=1, max_subset_size=60)
    assert ours == pytest.approx(theirs, rel=1e-10)
    assert polynomial_mmd(generated, real) == pytest.approx(theirs, rel=1e-10)


def test_kid_is_zero_in_expectation_for_two_samples_of_one_distribution():
    rng = np.random.default_rng(1)
    estimates = []
    for _ in range(40):
        a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
        estimates.append(kernel_inception_distance(a, b, subsets=1, subset_size=50)[0])
    mean, standard_error = np.mean(estimates), np.std(estimates, ddof=1) / np.sqrt(40)
    assert abs(mean) < 3 * standard_error
    shifted = kernel_inception_distance(rng.normal(size=(50, 8)), rng.normal(0.5, 1, (50, 8)),
                                        subsets=5, subset_size=40)[0]
    assert shifted > mean + 5 * standard_error  # and it does see a shifted distribution


def test_kid_subsets_are_seeded_and_report_their_spread():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(80, 8)), rng.normal(0.3, 1, (80, 8))
    first = kernel_inception_distance(a, b, subsets=10, subset_size=30, seed=3)
    assert first == kernel_inception_distance(a, b, subsets=10, subset_size=30, seed=3)
    assert first[1] > 0
