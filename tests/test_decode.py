"""Decoding GRID-like .mpg clips and wav files with PyAV (the clips are made by tests/helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import face_frames, sine, write_mpg, write_wav

from lipsync.core.errors import InputError
from lipsync.data import decode


def test_real_grid_clip_decodes_to_75_rgb_frames_at_25_fps(grid_samples):
    frames, fps = decode.read_video(grid_samples / "bbaf2n.mpg")
    assert frames.shape == (75, 288, 360, 3)
    assert frames.dtype == np.uint8
    assert fps == 25.0
    # Real footage, not a constant picture.
    assert frames.std() > 10


def test_real_grid_track_is_three_seconds_of_mono_16khz_speech(grid_samples):
    audio = decode.read_audio(grid_samples / "swwp2s.mpg", 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # MP2 frames of 1152 samples: 114 of them at 44.1 kHz = 2.978 s.
    assert len(audio) == pytest.approx(2.978 * 16000, abs=2)
    assert 0.01 < np.abs(audio).max() <= 1.1


def test_written_clip_round_trips_frames_and_audio(tmp_path):
    frames = face_frames(10)
    path = write_mpg(tmp_path / "clip.mpg", frames, audio=sine(0.4, 44100))
    clip = decode.read_clip(path, sample_rate=16000)
    assert clip.frames.shape == frames.shape
    assert clip.fps == 25.0
    # MPEG-1 is lossy; the picture is still close.
    assert np.abs(clip.frames.astype(int) - frames).mean() < 6
    # The stereo channels are averaged, so the amplitude stays 0.3 (no 3 dB downmix gain).
    assert np.abs(clip.audio).max() == pytest.approx(0.3, abs=0.02)
    assert clip.sample_rate == 16000


def test_wav_at_50khz_is_resampled_to_16khz_keeping_pitch(tmp_path):
    path = write_wav(tmp_path / "tone.wav", sine(1.0, 50000, frequency=1000.0), 50000)
    audio = decode.read_audio(path, 16000)
    assert len(audio) == pytest.approx(16000, abs=2)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 16000 / len(audio)
    assert peak_hz == pytest.approx(1000, abs=2)


def test_read_clip_takes_audio_from_a_separate_file_when_given(tmp_path):
    video = write_mpg(tmp_path / "silent.mpg", face_frames(5))
    wav = write_wav(tmp_path / "voice.wav", sine(0.2, 50000), 50000)
    clip = decode.read_clip(video, audio_path=wav, sample_rate=16000)
    assert len(clip.audio) == pytest.approx(3200, abs=2)


def test_count_video_frames_matches_decoding(tmp_path):
    path = write_mpg(tmp_path / "clip.mpg", face_frames(7))
    assert decode.count_video_frames(path) == (7, 25.0)


@pytest.mark.parametrize("problem", ["missing", "empty", "garbage"])
def test_unusable_file_raises_input_error_naming_it(tmp_path, problem):
    path = tmp_path / f"{problem}.mpg"
    if problem == "empty":
        path.write_bytes(b"")
    elif problem == "garbage":
        path.write_bytes(b"this is not a video" * 50)
    with pytest.raises(InputError) as error:
        decode.read_video(path)
    assert str(path) in str(error.value)
    with pytest.raises(InputError):
        decode.read_audio(path, 16000)


def test_video_without_audio_track_raises_when_audio_is_needed(tmp_path):
    path = write_mpg(tmp_path / "mute.mpg", face_frames(3))
    assert decode.read_video(path)[0].shape[0] == 3
    with pytest.raises(InputError, match="no audio stream") as error:
        decode.read_audio(path, 16000)
    assert str(path) in str(error.value)


def test_wav_has_no_video_stream(tmp_path):
    path = write_wav(tmp_path / "tone.wav", sine(0.1, 16000), 16000)
    with pytest.raises(InputError, match="no video stream"):
        decode.read_video(path)


def test_truncated_real_clip_keeps_the_frames_before_the_cut(grid_samples, tmp_path):
    content = (grid_samples / "bbaf2n.mpg").read_bytes()
    path = tmp_path / "truncated.mpg"
    path.write_bytes(content[: int(len(content) * 0.4)])
    frames, fps = decode.read_video(path)
    assert 0 < len(frames) < 75
    assert fps == 25.0
    whole, _ = decode.read_video(grid_samples / "bbaf2n.mpg")
    # The frame the cut runs through may be partly concealed; every earlier one is intact.
    assert np.array_equal(frames[:-1], whole[: len(frames) - 1])
