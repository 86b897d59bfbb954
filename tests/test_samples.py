"""LipGAN's sample rules: kept crops, mel windows for both alignments, reference draws."""

import numpy as np
import pytest

from lipsync.data import samples

STEPS = samples.mel_steps_per_frame(16000, 200, 25)
FRAMES = np.arange(75)


def rules(alignment, mel_steps=241, **extra):
    options = {"mel_alignment": alignment, **extra}
    return samples.clip_samples(FRAMES, mel_steps, samples_options=options, steps_per_frame=STEPS)


def test_steps_per_frame_comes_from_audio_and_video_settings():
    assert STEPS == pytest.approx(3.2)
    assert samples.mel_steps_per_frame(16000, 160, 25) == 4


def test_75_frames_keep_68_crops_frames_4_to_71():
    kept = samples.kept_frames(FRAMES, 75, 4)
    assert kept.sum() == 68
    assert FRAMES[kept][0] == 4 and FRAMES[kept][-1] == 71


def test_centered_windows_all_fit_a_241_step_mel():
    result = rules("centered")
    assert result.valid.all() and result.dropped == 0
    assert result.mel_start[0] == 0  # frame 4: round(12.8) - 13
    assert result.mel_start[-1] + 27 == 241  # frame 71: round(227.2) - 13 = 214


def test_lipgan_rule_gives_64_samples_and_counts_4_dropped():
    result = rules("lipgan")
    assert result.valid.sum() == 64 and result.dropped == 4
    # LipGAN: crop i (frame i + 4) -> int(3.2 * (i - 4))
    expected = [int(3.2 * (i - 4)) for i in range(68)]
    assert result.mel_start.tolist() == expected


def test_short_audio_drops_only_out_of_range_samples_and_counts_them():
    result = rules("centered", mel_steps=200)
    expected_valid = result.mel_start + 27 <= 200
    assert (result.valid == expected_valid).all()
    assert result.dropped == int((~expected_valid).sum()) > 0
    assert result.valid[:50].all()


def test_unknown_alignment_is_an_error():
    with pytest.raises(ValueError, match="mel_alignment"):
        rules("sideways")


@pytest.mark.parametrize("distance", [0, 1, 6])
def test_references_keep_their_distance_and_reach_every_candidate(distance):
    n = 14
    rng = np.random.default_rng(0)
    crop = np.repeat(np.arange(n), 400)
    refs = samples.draw_references(crop, n, distance, rng.random(crop.size))
    assert (np.abs(refs - crop) >= distance).all()
    assert ((refs >= 0) & (refs < n)).all()
    for i in range(n):
        candidates = {j for j in range(n) if abs(j - i) >= distance}
        assert set(refs[crop == i].tolist()) == candidates


def test_clips_too_short_for_the_reference_distance_have_no_references():
    assert samples.has_references(12, 6) and not samples.has_references(11, 6)
    assert not samples.has_references(0, 0)
    with pytest.raises(ValueError):
        samples.draw_references(np.array([5]), 11, 6, np.array([0.5]))


def test_hash_uniforms_are_reproducible_and_depend_on_every_key():
    a = samples.uniforms_from_hash(samples.mix64(0, 1, np.arange(1000)))
    assert np.array_equal(a, samples.uniforms_from_hash(samples.mix64(0, 1, np.arange(1000))))
    assert not np.array_equal(a, samples.uniforms_from_hash(samples.mix64(0, 2, np.arange(1000))))
    assert not np.array_equal(a, samples.uniforms_from_hash(samples.mix64(1, 1, np.arange(1000))))
    assert 0 <= a.min() and a.max() < 1 and abs(a.mean() - 0.5) < 0.05
