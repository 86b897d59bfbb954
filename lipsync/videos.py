"""`lipsync score-videos`: score another system's videos against reference videos with the
pipeline's own preprocessing and metric registry.

Videos are matched by file name (without suffix). Both sides go through the same detector and
tracker and 96x96 crops, and mels from each video's own audio; the reference side becomes a
test-set HDF5 and the generated side a generated-set HDF5 (docs/ARCHITECTURE.md), which
lipsync.metrics.score scores like any run of the DAG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lipsync.data import decode, detectors, integrity
from lipsync.data import faces as face_tracks
from lipsync.data import samples as sample_rules
from lipsync.data.audio import AUDIO_DEFAULTS, fit_length, melspectrogram
from lipsync.errors import InputError, LipsyncError
from lipsync.io import atomic_path, write_json, write_tsv
from lipsync.logs import get_logger
from lipsync.metrics import score
from lipsync.progress import progress
from lipsync.provenance import describe

log = get_logger(__name__)

# Options of score-videos itself (the `videos` part of --options).
VIDEOS_DEFAULTS = {
    # Where the generated frames are cropped: at the reference video's face boxes (`reference`,
    # mapped by time and scaled to the generated resolution) or at boxes detected in the generated
    # video itself (`own`). `reference` is the default because SSIM and PSNR compare pixels at the
    # same place: systems that paste a mouth into the input frame (LipGAN, Wav2Lip, MuseTalk) keep
    # its geometry, and a box detected afresh jitters by pixels, which alone lowers SSIM.
    "boxes": "reference",
    "suffixes": [".mp4", ".mpg", ".mpeg", ".mov", ".mkv", ".avi", ".webm", ".m4v"],
    "mel_window": sample_rules.DEFAULTS["mel_window"],
}
VIDEO_COLUMNS = ["video", "status", "reason", "reference_frames", "generated_frames",
                 "reference_fps", "generated_fps", "aligned_frames", "samples",
                 "reference_face_frames", "generated_face_frames"]


def resolve_options(options: dict | None) -> dict:
    options = options or {}
    unknown = sorted(set(options) - {"faces", "audio", "evaluate", "videos"})
    if unknown:
        raise LipsyncError(f"unknown score-videos option section(s) {', '.join(unknown)}; "
                           "known: audio, evaluate, faces, videos")
    videos = {**VIDEOS_DEFAULTS, **(options.get("videos") or {})}
    if videos["boxes"] not in ("reference", "own"):
        raise LipsyncError(f"videos.boxes must be reference or own, not {videos['boxes']!r}")
    return {"faces": face_tracks._merged(face_tracks.FACES_DEFAULTS, options.get("faces")),
            "audio": {**AUDIO_DEFAULTS, **(options.get("audio") or {})},
            "evaluate": dict(options.get("evaluate") or {}), "videos": videos}


def list_videos(folder: str | os.PathLike, suffixes: list[str]) -> dict[str, Path]:
    """Video files of `folder` by name without suffix (two files of one name are an error)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder of videos")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise InputError(path, f"two videos named {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    return found


@dataclass
class Side:
    """One decoded, tracked video with its mel spectrogram."""

    path: Path
    frames: np.ndarray
    fps: float
    mel: np.ndarray  # n_mels x T, the audio fitted to the video's duration
    boxes: np.ndarray
    detected: np.ndarray


@dataclass
class Pair:
    name: str
    row: dict
    reference_crops: np.ndarray | None = field(default=None, repr=False)
    generated_crops: np.ndarray | None = field(default=None, repr=False)
    frames: np.ndarray | None = None  # reference frame index of each sample
    reference_mel: np.ndarray | None = field(default=None, repr=False)
    generated_mel: np.ndarray | None = field(default=None, repr=False)
    reference_mel_starts: np.ndarray | None = None
    generated_mel_starts: np.ndarray | None = None


def _side(path: Path, detector, faces: dict, audio: dict) -> Side:
    frames, fps = decode.read_video(path)
    if not fps:
        raise InputError(path, "video declares no frame rate")
    sample_rate = int(audio["sample_rate"])
    wav = decode.read_audio(path, sample_rate)
    wav = fit_length(wav, int(round(len(frames) / fps * sample_rate)))
    track = face_tracks.face_track(frames, detector, faces)
    if track is None:
        raise InputError(path, f"no face found in any of its {len(frames)} frames")
    return Side(path, frames, float(fps), melspectrogram(wav, audio), track.boxes,
                np.asarray(track.detected, bool))


def _mel_starts(frames: np.ndarray, fps: float, mel: np.ndarray, audio: dict, window: int
                ) -> np.ndarray:
    steps = sample_rules.mel_steps_per_frame(int(audio["sample_rate"]), int(audio["hop_length"]),
                                             fps)
    starts = sample_rules.mel_window_starts(frames, steps_per_frame=steps, mel_window=window,
                                            alignment="centered", edge_frames=0)
    return np.clip(starts, 0, max(mel.shape[1] - window, 0))


def align_by_time(n_reference: int, reference_fps: float, n_generated: int,
                  generated_fps: float) -> np.ndarray:
    """Generated frame nearest in time to each reference frame (-1 past the generated end)."""
    times = np.arange(n_reference) / reference_fps
    nearest = np.floor(times * generated_fps + 0.5 + 1e-9).astype(np.int64)
    return np.where(nearest < n_generated, nearest, -1)


def prepare_pair(name: str, reference: Path, generated: Path, detector, options: dict) -> Pair:
    """Decode, track, align and crop one pair; problems give a Pair with status `excluded`."""
    faces, audio, videos = options["faces"], options["audio"], options["videos"]
    row = {"video": name, "status": "ok", "reason": ""}
    pair = Pair(name, row)
    try:
        ref = _side(reference, detector, faces, audio)
        gen = _side(generated, detector, faces, audio)
    except InputError as error:
        row.update(status="excluded", reason=str(error))
        return pair
    matched = align_by_time(len(ref.frames), ref.fps, len(gen.frames), gen.fps)
    usable = (matched >= 0) & ref.detected
    if videos["boxes"] == "own":
        usable &= np.where(matched >= 0, gen.detected[np.clip(matched, 0, None)], False)
    frames = np.flatnonzero(usable)
    row.update(reference_frames=len(ref.frames), generated_frames=len(gen.frames),
               reference_fps=ref.fps, generated_fps=gen.fps,
               aligned_frames=int((matched >= 0).sum()), samples=len(frames),
               reference_face_frames=int(ref.detected.sum()),
               generated_face_frames=int(gen.detected.sum()))
    notes = []
    if len(ref.frames) != len(gen.frames) or abs(ref.fps - gen.fps) > 1e-3:
        notes.append(f"reference {len(ref.frames)} frames at {ref.fps:g} fps, generated "
                     f"{len(gen.frames)} at {gen.fps:g} fps: aligned by time, "
                     f"{int((matched < 0).sum())} reference frames without a generated one")
    if not len(frames):
        row.update(status="excluded", reason="; ".join(notes + ["no frame with a face on both "
                                                                 "sides"]))
        return pair
    size = int(faces["image_size"])
    generated_frames = matched[frames]
    if videos["boxes"] == "reference":
        scale = np.array([gen.frames.shape[2] / ref.frames.shape[2],
                          gen.frames.shape[1] / ref.frames.shape[1]] * 2)
        boxes = ref.boxes[frames] * scale
    else:
        boxes = gen.boxes[generated_frames]
    pair.reference_crops = face_tracks.crop_faces(ref.frames[frames], ref.boxes[frames], size)
    pair.generated_crops = face_tracks.crop_faces(gen.frames[generated_frames], boxes, size)
    window = int(videos["mel_window"])
    pair.frames = frames
    pair.reference_mel, pair.generated_mel = ref.mel, gen.mel
    pair.reference_mel_starts = _mel_starts(frames, ref.fps, ref.mel, audio, window)
    pair.generated_mel_starts = _mel_starts(generated_frames, gen.fps, gen.mel, audio, window)
    row["reason"] = "; ".join(notes)
    return pair


def _write_sets(pairs: list[Pair], speaker: str, test_set: Path, generated: Path, run: str,
                options: dict) -> None:
    """The reference side as a test split, the generated side as generated/{run}.h5."""
    counts = np.array([len(p.frames) for p in pairs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    mel_counts = np.array([p.reference_mel.shape[1] for p in pairs], dtype=np.int64)
    mel_offsets = np.concatenate([[0], np.cumsum(mel_counts)[:-1]]).astype(np.int64)
    gen_counts = np.array([p.generated_mel.shape[1] for p in pairs], dtype=np.int64)
    gen_offsets = np.concatenate([[0], np.cumsum(gen_counts)[:-1]]).astype(np.int64)
    n = int(counts.sum())
    crops = np.arange(n, dtype=np.int64)
    size = int(options["faces"]["image_size"])
    with atomic_path(test_set) as tmp, h5py.File(tmp, "w") as handle:
        handle["faces"] = np.concatenate([p.reference_crops for p in pairs])
        handle["mels"] = np.concatenate([p.reference_mel.T for p in pairs]).astype(np.float32)
        handle["clips/speaker"] = np.array([speaker] * len(pairs), dtype=object)
        handle["clips/clip"] = np.array([p.name for p in pairs], dtype=object)
        handle["clips/crop_start"] = starts
        handle["clips/crop_count"] = counts
        handle["clips/mel_start"] = mel_offsets
        handle["clips/mel_count"] = mel_counts
        handle["crops/clip_index"] = np.repeat(np.arange(len(pairs)), counts).astype(np.int32)
        handle["crops/frame"] = np.concatenate([p.frames for p in pairs]).astype(np.int32)
        handle["samples/crop"] = crops
        handle["samples/mel_start"] = np.concatenate(
            [o + p.reference_mel_starts for o, p in zip(mel_offsets, pairs, strict=True)])
        # No fixed reference input exists for another system's video: each sample names its own
        # crop, so readers of samples/reference (a test split's) still work.
        handle["samples/reference"] = crops
        handle.attrs.update(layout="raw", image_size=size,
                            mel_window=int(options["videos"]["mel_window"]),
                            config=_json({k: options[k] for k in ("faces", "audio", "videos")}),
                            provenance=_json(describe()))
        integrity.record_all(handle)
    with atomic_path(generated) as tmp, h5py.File(tmp, "w") as handle:
        handle["faces"] = np.concatenate([p.generated_crops for p in pairs])
        # The generated videos' own audio, for metrics of sync with what the video plays.
        handle["mels"] = np.concatenate([p.generated_mel.T for p in pairs]).astype(np.float32)
        handle["samples/mel_start"] = np.concatenate(
            [o + p.generated_mel_starts for o, p in zip(gen_offsets, pairs, strict=True)])
        handle.attrs.update(model="external", checkpoint="", run=run, samples=n,
                            provenance=_json(describe()))
        integrity.record_all(handle)


def _json(value) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def score_videos(generated: str | os.PathLike, reference: str | os.PathLike,
                 output: str | os.PathLike, *, options: dict | None = None, run: str | None = None,
                 threads: int = 1) -> dict:
    """Score the videos of folder `generated` against those of folder `reference` into `output`.

    `options` = {"faces", "audio", "evaluate", "videos"} sections (missing keys: defaults).
    Writes `output/test.h5`, `output/{run}.h5`, `output/reference/{metric}.npz`, and the
    scorer's `scores.tsv`, `clips.tsv`, `summary.json` (summary with a `videos` entry: one row
    per video, scored or not and why), plus `videos.tsv`. `run` defaults to the generated
    folder's name. Returns the summary.
    """
    options = resolve_options(options)
    output = Path(output)
    run = run or Path(generated).resolve().name
    suffixes = [s.lower() for s in options["videos"]["suffixes"]]
    generated_videos = list_videos(generated, suffixes)
    reference_videos = list_videos(reference, suffixes)
    detector = detectors.build(options["faces"])
    rows, pairs = [], []
    for name in sorted(set(generated_videos) | set(reference_videos)):
        if name not in reference_videos or name not in generated_videos:
            side = "reference" if name not in reference_videos else "generated"
            rows.append({"video": name, "status": "excluded",
                         "reason": f"no {side} video named {name!r}"})
    names = sorted(set(generated_videos) & set(reference_videos))
    for name in progress(names, desc="score-videos preprocess", unit="video"):
        pair = prepare_pair(name, reference_videos[name], generated_videos[name], detector,
                            options)
        rows.append(pair.row)
        if pair.row["status"] == "ok":
            pairs.append(pair)
        else:
            log.warning("not scored: %s: %s", name, pair.row["reason"])
    table = pd.DataFrame(rows, columns=VIDEO_COLUMNS).sort_values("video", kind="stable")
    write_tsv(output / "videos.tsv", table)
    if not pairs:
        raise LipsyncError(f"no video of {generated} could be scored against {reference}: "
                           + "; ".join(f"{r['video']}: {r['reason']}" for r in rows))

    test_set, generated_set = output / "test.h5", output / f"{run}.h5"
    _write_sets(pairs, Path(reference).resolve().name, test_set, generated_set, run, options)
    summary = score.score_with_references(generated_set, test_set, output / "reference", output,
                                          options=options["evaluate"], threads=threads)
    summary.update(model="external", generated=str(generated), reference=str(reference),
                   videos=table.replace({np.nan: None}).to_dict("records"),
                   preprocessing={k: options[k] for k in ("faces", "audio", "videos")})
    write_json(output / "summary.json", summary)
    log.info("score-videos %s: %d of %d videos scored", run, len(pairs), len(rows))
    return summary
