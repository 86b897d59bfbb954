"""LipGAN's (= Wav2Lip's) mel spectrogram features, and the per-shard job that writes them to HDF5."""

from __future__ import annotations

import functools
import os

import h5py
import numpy as np
import pandas as pd
import scipy.signal

from lipsync.core.errors import InputError
from lipsync.core.io import atomic_path
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults
from lipsync.core.progress import progress
from lipsync.data import decode
from lipsync.data.manifest import ClipEntry, read_shard, shard_attributes

log = get_logger(__name__)

# Config section `audio`: LipGAN / Wav2Lip mel features (their hparams.py), the one place these
# numbers are stated; the mel dataset, the sync expert and the LSE metrics import them.
AUDIO_OPTIONS = {
    "sample_rate": Option(16000, int, "Waveform rate the mels are computed at (Hz).", minimum=1),
    "n_fft": Option(800, int, "STFT size (50 ms at 16 kHz).", minimum=1),
    "hop_length": Option(200, int, "STFT hop: 80 mel steps per second at 16 kHz.", minimum=1),
    "win_length": Option(800, int, "STFT window; at most n_fft.", minimum=1),
    "n_mels": Option(80, int, "Mel bands (the models take 80).", minimum=1),
    "fmin": Option(55, float, "Lowest mel frequency (Hz).", minimum=0),
    "fmax": Option(7600, float, "Highest mel frequency (Hz): above fmin, at most sample_rate / 2.",
                   above=0),
    "preemphasis": Option(0.97, float, "Pre-emphasis filter coefficient.", minimum=0, below=1),
    "ref_level_db": Option(20, float, "Subtracted from the log-mel (dB)."),
    "min_level_db": Option(-100, float, "Floor of the dB range mapped onto [-max_abs_value, "
                           "max_abs_value].", below=0),
    "max_abs_value": Option(4.0, float, "The mels lie in [-max_abs_value, max_abs_value].",
                            above=0),
    "max_missing_mel_steps": Option(
        27, float, "A clip whose audio ends more than this many mel steps before its video is "
        "excluded with the reason; shorter gaps are padded with silence. The default, one mel "
        "window (0.3375 s at 16 kHz, hop 200), passes GRID's tracks, which end about 22 ms early; "
        "a clip missing more would train on silent windows.", minimum=0),
}
AUDIO_DEFAULTS = defaults(AUDIO_OPTIONS)
SOURCES = ("track", "wav50k")
STATUS_COLUMNS = ["speaker", "clip", "status", "reason", "audio_seconds", "mel_frames"]


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def melspectrogram(wav: np.ndarray, options: dict | None = None) -> np.ndarray:
    """LipGAN's normalised log-mel spectrogram (n_mels x T, float32, in [-max_abs, max_abs]).

    Pre-emphasis, |STFT| (Hann, centred), mel filter bank, 20 log10 with a 1e-5 floor minus
    ref_level_db, then a symmetric linear map of [min_level_db, 0] dB onto [-max_abs, max_abs].
    """
    import librosa  # here, not at import: reading a status table needs no librosa

    o = {**AUDIO_DEFAULTS, **(options or {})}
    emphasized = scipy.signal.lfilter([1, -o["preemphasis"]], [1], np.asarray(wav, np.float64))
    # LipGAN ran librosa 0.7, whose centred STFT padded by reflection; librosa >= 0.10 pads with
    # zeros by default, which changes the first and last frames. Ask for reflection explicitly.
    spectrum = np.abs(librosa.stft(y=emphasized, n_fft=o["n_fft"], hop_length=o["hop_length"],
                                   win_length=o["win_length"], window="hann", center=True,
                                   pad_mode="reflect"))
    mel = _mel_basis(o["sample_rate"], o["n_fft"], o["n_mels"], o["fmin"], o["fmax"]) @ spectrum
    decibels = 20 * np.log10(np.maximum(1e-5, mel)) - o["ref_level_db"]
    max_abs, min_level = o["max_abs_value"], o["min_level_db"]
    normalised = 2 * max_abs * (decibels - min_level) / -min_level - max_abs
    return np.clip(normalised, -max_abs, max_abs).astype(np.float32)


def fit_length(wav: np.ndarray, n_samples: int) -> np.ndarray:
    """Cut `wav` to `n_samples` or pad it at the end with silence."""
    if len(wav) >= n_samples:
        return wav[:n_samples]
    return np.concatenate([wav, np.zeros(n_samples - len(wav), dtype=wav.dtype)])


def clip_audio(entry: ClipEntry, source: str, sample_rate: int) -> tuple[np.ndarray, float]:
    """A clip's audio fitted to its video's duration, and the seconds actually decoded.

    GRID's MP2 track stops 22 ms before the 75th frame ends (2.978 s of 3 s); LipGAN's mel index
    3.2 * frame assumes audio and video of equal length, so the audio is padded (or cut) to
    frames / fps seconds: a 75-frame clip always gives 48000 samples, 241 mel frames.
    """
    if source == "track":
        audio_path = entry.video
    elif entry.audio:
        audio_path = entry.audio
    else:
        raise InputError(entry.video, "the manifest names no audio file for this clip "
                                      "(data.audio is wav50k)")
    wav = decode.read_audio(audio_path, sample_rate)
    n_frames, fps = decode.count_video_frames(entry.video)
    return fit_length(wav, int(round(n_frames / fps * sample_rate))), len(wav) / sample_rate


def compute_shard(manifest: str | os.PathLike, shard: int, shard_size: int,
                  output: str | os.PathLike, *, options: dict) -> pd.DataFrame:
    """Mel spectrograms of one manifest shard into HDF5 `output`; returns the status table.

    `options` = {"audio": audio config section, "source": "track" | "wav50k"}. Kept clips get
    `/clips/{clip}/mel` (float32 n_mels x T) with attrs `audio_seconds` (decoded, before fitting
    to the video) and `speaker`. Every clip of the shard, kept or not, has a row in the `/status`
    table (see `read_status`): a clip without audio, whose audio or video cannot be decoded, or
    whose audio ends more than `audio.max_missing_mel_steps` mel steps before its video, is
    `excluded` with the reason. File attrs: `options`, `provenance` (JSON).
    """
    audio = {**AUDIO_DEFAULTS, **options.get("audio", {})}
    source = options.get("source", "track")
    if source not in SOURCES:
        raise InputError(manifest, f"unknown audio source {source!r}; choose one of {SOURCES}")
    entries = read_shard(manifest, shard, shard_size)
    sample_rate = int(audio["sample_rate"])

    rows = []
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as handle:
        clips = handle.create_group("clips")
        for entry in progress(entries, desc=f"mels shard {shard}", unit="clip"):
            row = {"speaker": entry.speaker, "clip": entry.clip, "status": "ok", "reason": "",
                   "audio_seconds": 0.0, "mel_frames": 0}
            try:
                wav, seconds = clip_audio(entry, source, sample_rate)
                _check_missing_audio(entry, seconds, len(wav) / sample_rate, audio)
            except InputError as error:
                row.update(status="excluded", reason=str(error))
                log.warning("excluded %s: %s", entry.clip, error)
                rows.append(row)
                continue
            mel = melspectrogram(wav, audio)
            group = clips.create_group(entry.clip)
            group.create_dataset("mel", data=mel)
            group.attrs["audio_seconds"] = seconds
            group.attrs["speaker"] = entry.speaker
            row.update(audio_seconds=seconds, mel_frames=mel.shape[1])
            rows.append(row)
        table = pd.DataFrame(rows, columns=STATUS_COLUMNS)
        _write_status(handle, table)
        handle.attrs.update(shard_attributes({"audio": audio, "source": source}, shard,
                                             shard_size, entries))
    log.info("mels shard %d: %d of %d clips kept", shard, int((table["status"] == "ok").sum()),
             len(table))
    return table


def _check_missing_audio(entry: ClipEntry, audio_seconds: float, video_seconds: float,
                         audio: dict) -> None:
    """InputError when the audio ends more than max_missing_mel_steps before the video."""
    tolerance = audio["max_missing_mel_steps"] * audio["hop_length"] / audio["sample_rate"]
    missing = video_seconds - audio_seconds
    if missing > tolerance + 1e-9:
        raise InputError(entry.audio or entry.video,
                         f"audio of {audio_seconds:.3f} s is {missing:.3f} s shorter than the "
                         f"video ({video_seconds:.3f} s), more than audio.max_missing_mel_steps "
                         f"({audio['max_missing_mel_steps']:g} mel steps = {tolerance:.4f} s)")


def _write_status(handle: h5py.File, table: pd.DataFrame) -> None:
    """A table as a group of equal-length columns: strings UTF-8, numbers float64 / int64."""
    group = handle.create_group("status")
    for column in STATUS_COLUMNS:
        values = table[column].to_numpy()
        if column in ("audio_seconds",):
            group.create_dataset(column, data=values.astype(np.float64))
        elif column == "mel_frames":
            group.create_dataset(column, data=values.astype(np.int64))
        else:
            group.create_dataset(column, data=[str(v) for v in values],
                                 dtype=h5py.string_dtype(), shape=(len(values),))


def read_status(path: str | os.PathLike) -> pd.DataFrame:
    """The `/status` table of a mels file: speaker, clip, status, reason, audio_seconds, mel_frames."""
    try:
        with h5py.File(path, "r") as handle:
            group = handle["status"]
            columns = {}
            for column in STATUS_COLUMNS:
                data = group[column]
                columns[column] = (data.asstr()[:] if h5py.check_string_dtype(data.dtype)
                                   else data[:])
    except (OSError, KeyError) as error:
        raise InputError(path, f"not a mels file with a /status table ({error})") from error
    return pd.DataFrame(columns, columns=STATUS_COLUMNS)
