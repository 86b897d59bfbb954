"""LipGAN mel features: values against a plain numpy re-derivation, and the per-shard HDF5 job."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from helpers import face_frames, sine, write_mpg, write_wav

from lipsync.data import audio, decode
from lipsync.data.manifest import ClipEntry, write_manifest


def _hz_to_mel(hz):
    # Slaney's scale: linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def reference_mel(wav, sr=16000, n_fft=800, hop=200, n_mels=80, fmin=55.0, fmax=7600.0):
    """The formulas of the LipGAN reference written out with numpy alone."""
    x = np.asarray(wav, dtype=np.float64)
    emphasized = np.concatenate([[x[0]], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(emphasized, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(n_frames)], axis=1)
    magnitude = np.abs(np.fft.rfft(frames, axis=0))
    # Slaney-normalised triangular filters between mel-spaced edges.
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    filters = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        rising = (bins - edges[m]) / (edges[m + 1] - edges[m])
        falling = (edges[m + 2] - bins) / (edges[m + 2] - edges[m + 1])
        filters[m] = np.maximum(0, np.minimum(rising, falling)) * 2 / (edges[m + 2] - edges[m])
    decibels = 20 * np.log10(np.maximum(1e-5, filters @ magnitude)) - 20
    return np.clip(8 * (decibels + 100) / 100 - 4, -4, 4)


def test_sine_of_one_second_matches_the_formulas_written_out():
    wav = sine(1.0, 16000, frequency=440.0, amplitude=0.5)
    mel = audio.melspectrogram(wav, {})
    assert mel.shape == (80, 81)
    assert mel.dtype == np.float32
    expected = reference_mel(wav)
    # A few pinned entries: the 440 Hz band, a far band, and the first and last frame.
    loudest = int(np.argmax(expected[:, 40]))
    for band, frame in [(loudest, 40), (loudest, 0), (loudest, 80), (70, 40), (0, 40)]:
        assert mel[band, frame] == pytest.approx(expected[band, frame], abs=1e-4)
    np.testing.assert_allclose(mel, expected, atol=1e-4)
    assert mel.min() >= -4 and mel.max() <= 4
    # 440 Hz sits in a low band, louder than the bands far above it.
    assert loudest < 20 and mel[loudest, 40] > mel[70, 40] + 1


def test_three_seconds_at_16khz_give_241_mel_frames():
    assert audio.melspectrogram(np.zeros(48000, np.float32), {}).shape == (80, 241)


def test_silence_is_the_floor_of_the_range():
    mel = audio.melspectrogram(np.zeros(16000, np.float32), {})
    assert np.all(mel == -4)


def test_options_change_the_features():
    wav = sine(0.5, 16000)
    assert audio.melspectrogram(wav, {"n_mels": 40}).shape == (40, 41)
    assert not np.allclose(audio.melspectrogram(wav, {"ref_level_db": 0}),
                           audio.melspectrogram(wav, {}))


def test_fit_length_pads_with_silence_or_cuts():
    wav = np.ones(5, np.float32)
    assert audio.fit_length(wav, 3).tolist() == [1, 1, 1]
    assert audio.fit_length(wav, 7).tolist() == [1, 1, 1, 1, 1, 0, 0]


def test_real_clips_give_80_by_241_mels(grid_samples, tmp_path):
    clips = ["bbaf2n", "brbk7n", "swwp2s"]
    entries = [ClipEntry("sx", c, str(grid_samples / f"{c}.mpg"), None, None) for c in clips]
    write_manifest(tmp_path / "manifest.tsv", entries)
    output = tmp_path / "mels.h5"
    table = audio.compute_shard(tmp_path / "manifest.tsv", 0, 0, output,
                                options={"audio": {}, "source": "track"})
    assert table["status"].tolist() == ["ok"] * 3
    with h5py.File(output, "r") as handle:
        for clip in clips:
            mel = handle[f"clips/{clip}/mel"]
            assert mel.shape == (80, 241) and mel.dtype == np.float32
            assert -4 <= mel[:].min() and mel[:].max() <= 4
            # Speech, not silence: many cells well above the floor.
            assert (mel[:] > -2).mean() > 0.2
            assert handle[f"clips/{clip}"].attrs["audio_seconds"] == pytest.approx(2.978, abs=1e-3)
        options = json.loads(handle.attrs["options"])
        assert options["source"] == "track" and options["audio"]["n_mels"] == 80
        assert "libraries" in json.loads(handle.attrs["provenance"])
    status = audio.read_status(output)
    assert status["clip"].tolist() == clips
    assert status["mel_frames"].tolist() == [241] * 3


def test_wav50k_source_reads_the_manifest_wav_and_excludes_clips_without_one(tmp_path):
    video = write_mpg(tmp_path / "a.mpg", face_frames(25), audio=sine(1.0, 44100, 300.0))
    wav = write_wav(tmp_path / "a.wav", sine(1.0, 50000, 2000.0), 50000)
    other = write_mpg(tmp_path / "b.mpg", face_frames(25), audio=sine(1.0, 44100))
    write_manifest(tmp_path / "m.tsv", [ClipEntry("sx", "a", str(video), str(wav), None),
                                        ClipEntry("sx", "b", str(other), None, None)])
    output = tmp_path / "mels.h5"
    table = audio.compute_shard(tmp_path / "m.tsv", 0, 0, output,
                                options={"audio": {}, "source": "wav50k"})
    assert table["status"].tolist() == ["ok", "excluded"]
    assert "names no audio file" in table["reason"][1] and str(other) in table["reason"][1]
    with h5py.File(output, "r") as handle:
        mel = handle["clips/a/mel"][:]
        assert "b" not in handle["clips"]
    # 25 frames at 25 fps: one second, 81 mel frames; the wav's 2 kHz tone, not the track's 300 Hz.
    assert mel.shape == (80, 81)
    expected = audio.melspectrogram(audio.fit_length(decode.read_audio(wav, 16000), 16000))
    np.testing.assert_allclose(mel, expected, atol=1e-6)


def test_empty_shard_gives_a_valid_empty_file(tmp_path):
    write_manifest(tmp_path / "m.tsv", [])
    output = tmp_path / "mels.h5"
    audio.compute_shard(tmp_path / "m.tsv", 0, 0, output, options={"audio": {}})
    with h5py.File(output, "r") as handle:
        assert len(handle["clips"]) == 0
    assert len(audio.read_status(output)) == 0


def short_audio_manifest(tmp_path, seconds_by_clip):
    """75-frame (3 s) clips whose audio tracks last the given seconds."""
    entries = []
    for clip, seconds in seconds_by_clip.items():
        video = write_mpg(tmp_path / f"{clip}.mpg", face_frames(75, shift=0),
                          audio=sine(seconds, 44100))
        entries.append(ClipEntry("sx", clip, str(video), None, None))
    write_manifest(tmp_path / "m.tsv", entries)
    return tmp_path / "m.tsv"


def test_audio_much_shorter_than_its_video_excludes_the_clip_with_the_reason(tmp_path):
    manifest = short_audio_manifest(tmp_path, {"short": 0.52, "nearly": 2.9})
    output = tmp_path / "mels.h5"
    table = audio.compute_shard(manifest, 0, 0, output, options={"audio": {}})
    # 0.52 s of 3 s is 2.48 s missing, past one mel window (27 steps = 0.3375 s); 0.1 s is not.
    assert table.set_index("clip")["status"].to_dict() == {"nearly": "ok", "short": "excluded"}
    reason = table.set_index("clip").loc["short", "reason"]
    assert "short.mpg: audio of 0.52" in reason and "shorter than the video (3.000 s)" in reason
    assert "max_missing_mel_steps" in reason
    status = audio.read_status(output)
    assert status.set_index("clip").loc["short", "status"] == "excluded"
    with h5py.File(output, "r") as handle:
        assert list(handle["clips"]) == ["nearly"]
        assert handle["clips/nearly/mel"].shape == (80, 241)


def test_the_short_audio_tolerance_is_a_config_key(tmp_path):
    manifest = short_audio_manifest(tmp_path, {"short": 0.52})
    lenient = audio.compute_shard(manifest, 0, 0, tmp_path / "lenient.h5",
                                  options={"audio": {"max_missing_mel_steps": 200}})
    strict = audio.compute_shard(manifest, 0, 0, tmp_path / "strict.h5",
                                 options={"audio": {"max_missing_mel_steps": 0}})
    assert lenient["status"].tolist() == ["ok"] and strict["status"].tolist() == ["excluded"]
