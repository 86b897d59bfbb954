"""LSE-D, LSE-C and the AV offset per clip, as Wav2Lip's evaluation computes them with a SyncNet
expert: `lse` with the expert this pipeline trains, `lse_public` with syncnet_python's weights.

Per clip: embeddings of every window of T consecutive frames (video) and of the audio window of
every frame; for each offset k in -K..K the mean distance (Euclidean between the unit-length
embeddings) between video window f and audio window f - k, over the windows where both exist;
LSE-D = the minimum of those means, LSE-C = their median minus their minimum, AV offset = the k of
the minimum (positive: the video lags the audio by k frames). Audio embeddings and the real
clips' scores are reference data (computed once per test set); scoring embeds the generated
faces only.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import sha256_file
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.registry import register_metric
from lipsync.metrics.testset import TestSet

log = get_logger(__name__)

_OFFSETS = Option(15, int, "Offsets -K..K frames searched (Wav2Lip / syncnet_python: 15).",
                  minimum=0)
# A 68-frame test clip has 64 windows, 49 at offset +-15.
_MIN_WINDOWS = Option(10, int, "An offset whose video and audio overlap in fewer windows is left "
                      "out of a clip's curve.", minimum=1)
LSE_OPTIONS = {
    "expert": Option("results/syncnet/expert.pt", str, "The expert file (lipsync train-syncnet's "
                     "output)."),
    "offsets": _OFFSETS,
    "min_windows": _MIN_WINDOWS,
    "batch_size": Option(256, int, "Windows per expert forward pass (memory only).", minimum=1),
}
LSE_DEFAULTS = defaults(LSE_OPTIONS)
PUBLIC_OPTIONS = {
    "weights": Option(None, str, "syncnet_python's syncnet_v2.model on disk (not downloadable "
                      "here); null: not configured, the metric reports n/a.", nullable=True),
    "manifests": Option("results/corpus/{speaker}.tsv", str, "Corpus manifests with each clip's "
                        "audio ({speaker} is filled in): the test set holds mels, this expert "
                        "needs waveforms."),
    "audio_source": Option("track", str, "As data.audio: track (the video's audio) or wav50k.",
                           one_of=("track", "wav50k")),
    "offsets": _OFFSETS,
    "min_windows": _MIN_WINDOWS,
    "batch_size": Option(16, int, "Clips' windows per forward pass (memory only).", minimum=1),
}
PUBLIC_DEFAULTS = defaults(PUBLIC_OPTIONS)
PUBLIC_LABEL = "public SyncNet (syncnet_python)"
OWN_LABEL = "SyncNet expert trained on this pipeline's training split"


def lse_columns(prefix: str = "") -> tuple[Column, ...]:
    """lse_d, lse_c, av_offset (with a prefix for a second expert: column names are global)."""
    return (
        Column(f"{prefix}lse_d", "LSE-D: minimum over offsets of the mean audio-visual "
               "embedding distance", higher_is_better=False, decimals=3),
        Column(f"{prefix}lse_c", "LSE-C: median minus minimum of the mean distance over offsets",
               higher_is_better=True, decimals=3),
        Column(f"{prefix}av_offset", "AV offset at the minimum distance (video lag, frames)",
               higher_is_better=False, unit="frames", decimals=0, ranked=False),
    )


SAMPLES_RULE = ("generated faces are per sample in the test set's sample order; each clip's "
                "frames are assembled in time order from the sample table (frames 4..71 of a "
                "75-frame clip); a video window needs T consecutive frames, so a dropped sample "
                "removes the T windows containing it")


def offset_curve(video: np.ndarray, video_frames: np.ndarray, audio: np.ndarray,
                 offsets: int, min_windows: int) -> np.ndarray:
    """Mean distance per offset k = -offsets..offsets (NaN where fewer than `min_windows` pairs).

    `video`: unit embeddings of the video windows starting at frames `video_frames`; `audio`:
    unit embeddings of the audio window of every frame 0..len(audio)-1.
    """
    curve = np.full(2 * offsets + 1, np.nan)
    video_frames = np.asarray(video_frames, dtype=np.int64)
    for j, k in enumerate(range(-offsets, offsets + 1)):
        a = video_frames - k
        inside = (a >= 0) & (a < len(audio))
        if inside.sum() >= max(1, min_windows):
            curve[j] = np.linalg.norm(video[inside] - audio[a[inside]], axis=1).mean()
    return curve


def lse_of_curve(curve: np.ndarray, offsets: int) -> tuple[float, float, float]:
    """(LSE-D, LSE-C, AV offset) of one clip's distance curve (NaN when no offset is valid)."""
    valid = np.isfinite(curve)
    if not valid.any():
        return math.nan, math.nan, math.nan
    minimum = float(np.nanmin(curve))
    best = int(np.nanargmin(curve)) - offsets
    return minimum, float(np.nanmedian(curve)) - minimum, float(best)


def clip_frames(samples: pd.DataFrame) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(speaker, clip) -> (sample indices in time order, their video frames)."""
    out = {}
    for key, group in samples.groupby(["speaker", "clip"], sort=False):
        group = group.sort_values("frame", kind="stable")
        out[key] = (group["sample"].to_numpy(np.int64), group["frame"].to_numpy(np.int64))
    return out


def window_starts(frames: np.ndarray, length: int) -> np.ndarray:
    """Positions i in `frames` (sorted) where frames[i .. i+length-1] are consecutive."""
    if len(frames) < length:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(frames[length - 1:] - frames[:len(frames) - length + 1] == length - 1)


class _LSE(Metric):
    """What both experts share: clips assembled from the batches, per-clip curves, real-clip
    reference scores."""

    label = ""

    # --- what an expert provides --------------------------------------------------------------
    @classmethod
    def _expert(cls, options: dict, device) -> object:
        raise NotImplementedError

    @classmethod
    def _frames_per_window(cls, expert) -> int:
        raise NotImplementedError

    @classmethod
    def _embed_video(cls, expert, faces: np.ndarray, options: dict, device) -> np.ndarray:
        """Unit embeddings of every window of T consecutive faces (uint8 N x S x S x 3)."""
        raise NotImplementedError

    @classmethod
    def _embed_audio(cls, expert, test_set: TestSet, clip: pd.Series, options: dict,
                     device) -> np.ndarray:
        """Unit embeddings of the audio window of every frame whose window fits the clip."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------
    @classmethod
    def _video_curve(cls, expert, faces, frames, audio, options, device) -> np.ndarray:
        t = cls._frames_per_window(expert)
        starts = window_starts(frames, t)
        if starts.size == 0:
            return np.full(2 * options["offsets"] + 1, np.nan)
        embeddings = cls._embed_video(expert, faces, options, device)  # every N-T+1 window
        return offset_curve(embeddings[starts], frames[starts], audio, options["offsets"],
                            options["min_windows"])

    @classmethod
    def reference(cls, test_set: TestSet, options: dict, *, device, threads: int = 1) -> dict:
        """Audio embeddings of every test clip, and the real clips' LSE (the upper bound)."""
        from lipsync.core.progress import progress

        expert = cls._expert(options, device)
        clips = test_set.clip_table()
        members = clip_frames(test_set.sample_table())
        audio_rows, audio_clip, real = [], [], []
        for k, clip in progress(list(clips.iterrows()), desc=f"{cls.name} reference",
                                unit="clip"):
            audio = cls._embed_audio(expert, test_set, clip, options, device)
            audio_rows.append(audio)
            audio_clip.append(np.full(len(audio), k, dtype=np.int64))
            samples, frames = members.get((clip["speaker"], clip["clip"]),
                                          (np.empty(0, np.int64), np.empty(0, np.int64)))
            faces = test_set.ground_truth_of(samples)
            curve = cls._video_curve(expert, faces, frames, audio, options, device)
            real.append(lse_of_curve(curve, options["offsets"]))
        dims = audio_rows[0].shape[1] if audio_rows else 1
        return {"audio": (np.concatenate(audio_rows) if audio_rows
                          else np.empty((0, dims))).astype(np.float32),
                "audio_clip": (np.concatenate(audio_clip) if audio_clip
                               else np.empty(0, np.int64)),
                "real": np.asarray(real, dtype=np.float64).reshape(-1, 3)}

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.expert = self._expert(options, context.device)
        self.clips = context.test_set.clip_table()
        self.members = clip_frames(context.samples)
        self.sample_clip = {}
        for k, (samples, _) in enumerate(self.members.values()):
            self.sample_clip.update(dict.fromkeys(samples.tolist(), k))
        self.keys = list(self.members)
        self.pending: dict[int, dict[int, np.ndarray]] = {}
        self.rows: dict[tuple[str, str], tuple[float, float, float]] = {}
        self.missing: dict[str, int] = {}

    def update(self, batch: Batch) -> None:
        for sample, face in zip(batch.samples.tolist(), batch.generated, strict=True):
            k = self.sample_clip[sample]
            self.pending.setdefault(k, {})[sample] = face
            if len(self.pending[k]) == len(self.members[self.keys[k]][0]):
                self._score_clip(k, self.pending.pop(k))

    def _score_clip(self, k: int, faces_by_sample: dict[int, np.ndarray]) -> None:
        key = self.keys[k]
        samples, frames = self.members[key]
        faces = np.stack([faces_by_sample[s] for s in samples.tolist()])
        reference = self.context.reference
        row = self.clips.index[(self.clips["speaker"] == key[0])
                               & (self.clips["clip"] == key[1])]
        audio = reference["audio"][reference["audio_clip"] == int(row[0])]
        curve = self._video_curve(self.expert, faces, frames, audio, self.options,
                                  self.context.device)
        self.rows[key] = lse_of_curve(curve, self.options["offsets"])
        if not np.isfinite(self.rows[key][0]):
            reason = (f"no offset with {self.options['min_windows']} windows of "
                      f"{self._frames_per_window(self.expert)} consecutive frames")
            self.missing[reason] = self.missing.get(reason, 0) + 1

    def result(self) -> Result:
        for k, faces in list(self.pending.items()):  # never complete: cannot happen in order
            self._score_clip(k, faces)
        names = [column.name for column in self.columns]
        table = pd.DataFrame([(s, c, *self.rows.get((s, c), (math.nan,) * 3))
                              for s, c in self.keys], columns=["speaker", "clip", *names])
        real = self.context.reference["real"]
        extra = {"expert": self.label}
        if len(real):
            # the upper bound every run is read against: the real test clips' own scores
            extra["real_clips"] = {name: float(np.nanmean(real[:, j]))
                                   for j, name in enumerate(names)
                                   if np.isfinite(real[:, j]).any()}
        return Result(table, missing=dict(self.missing), labels=[self.label], extra=extra)


# --- this pipeline's expert -------------------------------------------------------------------


def for_scoring(expert: torch.nn.Module) -> torch.nn.Module:
    """The expert in channels-last layout, as LSE scores with it: measured 2.1x faster on CPU
    for the width-1 expert's faces (same values within 1e-7), the layout cuDNN prefers too."""
    return expert.eval().to(memory_format=torch.channels_last)


def _steps_per_frame(test_set: TestSet) -> Fraction:
    from lipsync.data.samples import config_steps_per_frame

    return config_steps_per_frame(test_set.packing_config)


@register_metric("lse", level="clip", columns=lse_columns(), options=LSE_OPTIONS,
                 description="LSE-D / LSE-C / AV offset with the SyncNet expert trained here")
class LSE(_LSE):
    """Lip-sync error (Wav2Lip's LSE-D and LSE-C) from the expert `lipsync train-syncnet` made."""

    label = OWN_LABEL

    @classmethod
    def inputs(cls, options: dict) -> list[str]:
        return [options["expert"]]

    @classmethod
    def protocol(cls, options: dict) -> dict:
        path = Path(options["expert"])
        record = {"expert": OWN_LABEL, "expert_file": str(path),
                  "expert_sha256": sha256_file(path) if path.is_file() else None}
        frames = 5
        if path.is_file():
            from lipsync.models.syncnet import load_expert

            info = load_expert(path)[1]
            frames = info["model_options"]["frames"]
            record.update(expert_options=info["model_options"], expert_windows=info["samples"],
                          expert_held_out_accuracy=(info.get("validation") or {}).get(
                              "accuracy"))
        from lipsync.models.syncnet import mel_window

        record.update({
            "frames_per_window": frames,
            "faces": "lower half (rows 48..95) of the 96x96 RGB crop, scaled to [0, 1], T "
                     "crops stacked on channels",
            "audio": f"the test set's per-clip mel (/mels rows clips/mel_start..+mel_count); "
                     f"frame f's window is {mel_window(frames)} steps from floor(f * 16/5)",
            "distance": "Euclidean between L2-normalised embeddings",
            "offsets": f"-{options['offsets']}..{options['offsets']} frames (positive: video "
                       "lags audio)",
            "clip_edges": f"per offset, only windows whose audio lies inside the clip; offsets "
                          f"with fewer than {options['min_windows']} windows are left out",
            "dropped_samples": SAMPLES_RULE,
            "lse_d": "minimum over offsets of the mean distance",
            "lse_c": "median over offsets minus the minimum",
        })
        return record

    @classmethod
    def _expert(cls, options: dict, device):
        from lipsync.models.syncnet import load_expert

        return for_scoring(load_expert(options["expert"], device)[0])

    @classmethod
    def _frames_per_window(cls, expert) -> int:
        return expert.frames

    @classmethod
    @torch.no_grad()
    def _embed_video(cls, expert, faces, options, device) -> np.ndarray:
        from lipsync.models.syncnet import face_windows

        windows = face_windows(torch.from_numpy(np.ascontiguousarray(faces)), expert.frames)
        out = [expert.embed_faces(windows[i:i + options["batch_size"]].to(device).contiguous(
                   memory_format=torch.channels_last)).cpu()
               for i in range(0, len(windows), options["batch_size"])]
        return torch.cat(out).numpy() if out else np.empty((0, 1))

    @classmethod
    @torch.no_grad()
    def _embed_audio(cls, expert, test_set, clip, options, device) -> np.ndarray:
        from lipsync.experts.sync.dataset import audio_start, last_audio_frame
        from lipsync.models.syncnet import mel_window

        spf = _steps_per_frame(test_set)
        width = mel_window(expert.frames)
        mel = test_set.clip_mel(int(clip["mel_start"]), int(clip["mel_count"]))  # steps x 80
        last = last_audio_frame(int(clip["mel_count"]), width, spf)
        if int(clip["mel_count"]) < width:
            raise InputError(test_set.path, f"clip {clip['speaker']}/{clip['clip']}: "
                                            f"{clip['mel_count']} mel steps, fewer than a window")
        starts = audio_start(np.arange(last + 1), spf)
        windows = torch.from_numpy(np.stack([mel[s:s + width].T for s in starts]))[:, None]
        out = [expert.embed_audio(windows[i:i + options["batch_size"]].to(device)).cpu()
               for i in range(0, len(windows), options["batch_size"])]
        return torch.cat(out).numpy()


# --- syncnet_python's public weights ----------------------------------------------------------


# syncnet_python's front end is fixed at 16 kHz, whatever audio.sample_rate this pipeline uses.
PUBLIC_SAMPLE_RATE = 16000


def mfcc(signal: np.ndarray, sample_rate: int = PUBLIC_SAMPLE_RATE) -> np.ndarray:
    """13 MFCCs at 100 steps/s (M x 13), python_speech_features.mfcc's defaults as syncnet_python
    calls it: 25 ms rectangular frames every 10 ms, pre-emphasis 0.97, 512-point power spectrum,
    26 mel filters 0..sr/2, log, DCT-II (orthonormal), lifter 22, c0 replaced by log energy."""
    from scipy.fft import dct

    signal = np.asarray(signal, dtype=np.float64)
    signal = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    length, step, nfft = round(0.025 * sample_rate), round(0.01 * sample_rate), 512
    count = 1 + max(0, math.ceil((len(signal) - length) / step))
    padded = np.concatenate([signal, np.zeros(max(0, (count - 1) * step + length - len(signal)))])
    frames = np.stack([padded[i * step:i * step + length] for i in range(count)])
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = np.where(power.sum(axis=1) == 0, np.finfo(float).eps, power.sum(axis=1))

    def to_mel(hz):
        return 2595 * np.log10(1 + hz / 700.0)

    points = 700 * (10 ** (np.linspace(to_mel(0), to_mel(sample_rate / 2), 28) / 2595) - 1)
    bins = np.floor((nfft + 1) * points / sample_rate).astype(int)
    bank = np.zeros((26, nfft // 2 + 1))
    for j in range(26):
        for i in range(bins[j], bins[j + 1]):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(bins[j + 1], bins[j + 2]):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    features = power @ bank.T
    features = np.log(np.where(features == 0, np.finfo(float).eps, features))
    features = dct(features, type=2, axis=1, norm="ortho")[:, :13]
    features *= 1 + 11.0 * np.sin(np.pi * np.arange(13) / 22)
    features[:, 0] = np.log(energy)
    return features


@register_metric("lse_public", level="clip", columns=lse_columns("public_"), options=PUBLIC_OPTIONS,
                 description="LSE-D / LSE-C / AV offset with syncnet_python's public SyncNet")
class PublicLSE(_LSE):
    """LSE with syncnet_python's `syncnet_v2.model` (n/a with the reason when not configured)."""

    label = PUBLIC_LABEL

    @classmethod
    def _weights(cls, options: dict) -> Path:
        if not options.get("weights"):
            raise LipsyncError("public SyncNet weights not configured (evaluate.lse_public."
                               "weights: syncnet_python's syncnet_v2.model, which cannot be "
                               "downloaded here)")
        return Path(options["weights"])

    @classmethod
    def inputs(cls, options: dict) -> list[str]:
        # without weights the metric reports n/a and reads nothing
        return [options["weights"], options["manifests"]] if options.get("weights") else []

    @classmethod
    def protocol(cls, options: dict) -> dict:
        weights = options.get("weights")
        return {
            "expert": PUBLIC_LABEL, "weights": weights,
            "weights_sha256": sha256_file(weights) if weights and Path(weights).is_file()
            else None,
            "frames_per_window": 5,
            "faces": "the 96x96 crop resized to 224x224 (bilinear), BGR, 0..255 as "
                     "syncnet_python feeds them (its own crops are S3FD boxes enlarged by 40%)",
            "audio": "16 kHz waveform of the clip from the corpus manifest, int16 scale; 13 "
                     "MFCCs at 100/s (python_speech_features defaults); frame f's window is "
                     "MFCC steps 4f..4f+20",
            "distance": "Euclidean between L2-normalised embeddings",
            "offsets": f"-{options['offsets']}..{options['offsets']} frames (positive: video "
                       "lags audio)",
            "clip_edges": f"per offset, only windows whose audio lies inside the clip; offsets "
                          f"with fewer than {options['min_windows']} windows are left out",
            "dropped_samples": SAMPLES_RULE,
        }

    @classmethod
    def _expert(cls, options: dict, device):
        from lipsync.models.syncnet import load_public

        return load_public(cls._weights(options), device)

    @classmethod
    def _frames_per_window(cls, expert) -> int:
        return 5

    @classmethod
    @torch.no_grad()
    def _embed_video(cls, expert, faces, options, device) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(faces[..., ::-1])).permute(0, 3, 1, 2)
        images = torch.nn.functional.interpolate(images.float(), size=(224, 224),
                                                 mode="bilinear", align_corners=False)
        out = []
        for first in range(0, len(images) - 4, options["batch_size"]):
            stop = min(first + options["batch_size"], len(images) - 4)
            clips = torch.stack([images[i:i + 5] for i in range(first, stop)])  # B x 5 x 3 x H x W
            out.append(expert.embed_faces(clips.permute(0, 2, 1, 3, 4).to(device)).cpu())
        return torch.cat(out).numpy() if out else np.empty((0, 1))

    @classmethod
    @torch.no_grad()
    def _embed_audio(cls, expert, test_set, clip, options, device) -> np.ndarray:
        from lipsync.data.audio import clip_audio
        from lipsync.data.manifest import read_manifest

        manifest = Path(options["manifests"].format(speaker=clip["speaker"]))
        entries = {e.clip: e for e in read_manifest(manifest)} if manifest.is_file() else {}
        if clip["clip"] not in entries:
            raise InputError(manifest, f"clip {clip['speaker']}/{clip['clip']} not listed "
                                       "(evaluate.lse_public.manifests)")
        wav, _ = clip_audio(entries[clip["clip"]], options["audio_source"],
                            PUBLIC_SAMPLE_RATE)
        features = mfcc(wav * 32768.0).T.astype(np.float32)  # 13 x M
        last = (features.shape[1] - 20) // 4
        windows = torch.from_numpy(np.stack([features[:, 4 * a:4 * a + 20]
                                             for a in range(last + 1)]))[:, None]
        out = [expert.embed_audio(windows[i:i + 64].to(device)).cpu()
               for i in range(0, len(windows), 64)]
        return torch.cat(out).numpy()
