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

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import atomic_path, refuse_overwriting, write_json, write_tsv
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults, resolve
from lipsync.core.progress import progress
from lipsync.core.provenance import describe
from lipsync.data import decode, detectors, integrity, stream
from lipsync.data import faces as face_tracks
from lipsync.data import samples as sample_rules
from lipsync.data.audio import AUDIO_OPTIONS, fit_length, melspectrogram
from lipsync.metrics import score
from lipsync.tools.dub import check_faces

log = get_logger(__name__)

# Options of score-videos itself (the `videos` part of --options), checked before any decode.
VIDEOS_OPTIONS = {
    # At the reference's boxes, SSIM and PSNR compare pixels at the same place: systems that paste
    # a mouth into the input frame (LipGAN, Wav2Lip, MuseTalk) keep its geometry, and a box
    # detected afresh jitters by pixels, which alone lowers SSIM. A generated video whose picture
    # moved (rescale, crop, padding, shift) is cropped at its own boxes instead (choose_boxes).
    "boxes": Option("reference", str, "where generated frames are cropped: reference (the "
                    "reference video's face boxes, mapped by time and scaled) or own (boxes "
                    "detected in the generated video)", one_of=("reference", "own")),
    "suffixes": Option([".mp4", ".mpg", ".mpeg", ".mov", ".mkv", ".avi", ".webm", ".m4v"],
                       list, "file suffixes that count as videos", items=str),
    "mel_window": Option(sample_rules.DEFAULTS["mel_window"], int,
                         "mel steps per sample window", minimum=1),
}
VIDEOS_DEFAULTS = defaults(VIDEOS_OPTIONS)
VIDEO_COLUMNS = ["video", "status", "reason", "reference_frames", "generated_frames",
                 "reference_fps", "generated_fps", "aligned_frames", "samples",
                 "reference_face_frames", "generated_face_frames", "boxes"]


def resolve_options(options: dict | None) -> dict:
    """{"faces", "audio", "evaluate", "videos"} with defaults, checked before any decode."""
    options = options or {}
    unknown = sorted(set(options) - {"faces", "audio", "evaluate", "videos"})
    if unknown:
        raise LipsyncError(f"unknown score-videos option section(s) {', '.join(unknown)}; "
                           "known: audio, evaluate, faces, videos")
    videos = resolve(VIDEOS_OPTIONS, options.get("videos"), "videos")
    faces = check_faces(options.get("faces"))
    return {"faces": faces, "audio": resolve(AUDIO_OPTIONS, options.get("audio"), "audio"),
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
    """One video after its first pass: size, rate, face track and mel spectrogram (no frames)."""

    path: Path
    frames: int
    fps: float
    height: int
    width: int
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
    video = stream.track_video(path, detector, faces)
    if not video.fps:
        raise InputError(path, "video declares no frame rate")
    if video.track is None:
        raise InputError(path, f"no face found in any of its {video.frames} frames")
    sample_rate = int(audio["sample_rate"])
    wav = decode.read_audio(path, sample_rate)
    wav = fit_length(wav, int(round(video.frames / video.fps * sample_rate)))
    return Side(path, video.frames, float(video.fps), video.height, video.width,
                melspectrogram(wav, audio), video.track.boxes,
                np.asarray(video.track.detected, bool))


def _crops(side: Side, frames: np.ndarray, box_sets: list[np.ndarray], size: int
           ) -> list[np.ndarray]:
    """Face crops of `side` at its (non-decreasing) `frames`, one array per set of boxes, from one
    more pass over the video that holds one frame at a time."""
    crops = [np.empty((len(frames), size, size, 3), dtype=np.uint8) for _ in box_sets]
    for i, frame in enumerate(stream.frames_in_order(side.path, frames)):
        for out, boxes in zip(crops, box_sets, strict=True):
            out[i] = face_tracks.crop_faces(frame[None], boxes[i:i + 1], size)[0]
    return crops


def _upper_face_error(reference: np.ndarray, generated: np.ndarray) -> float:
    """Mean absolute difference of the crops' upper halves, which lip-sync systems leave alone:
    small when two crops show the same face at the same place and scale."""
    half = reference.shape[1] // 2
    return float(np.abs(reference[:, :half].astype(np.int16)
                        - generated[:, :half].astype(np.int16)).mean())


def choose_boxes(reference_crops: np.ndarray, generated_crops: dict[str, np.ndarray],
                 ref: Side, gen: Side) -> tuple[str, str]:
    """Which generated crops ("reference": at the reference's boxes scaled to the generated
    frame; "own": at the generated video's own boxes) show the reference's face where the
    reference crops do, and a note unless the geometry is plainly the same.

    A rescale, crop or padding (another frame size) or a shifted picture (the same size) moves the
    face against the reference's boxes; the upper half of the face, which lip-sync leaves as it
    was, then differs more at the reference's boxes than at the generated video's own.
    """
    errors = {name: _upper_face_error(reference_crops, crops)
              for name, crops in generated_crops.items()}
    choice = min(errors, key=lambda name: (errors[name], name != "reference"))
    same_size = (gen.width, gen.height) == (ref.width, ref.height)
    if "reference" not in errors or (same_size and choice == "reference"):
        return choice, ""
    where = ("cropped at the reference's boxes scaled to it" if choice == "reference"
             else "cropped at faces detected in the generated video")
    geometry = (f"generated frames are {gen.width}x{gen.height}, the reference's "
                f"{ref.width}x{ref.height} (rescaled, cropped or padded)" if not same_size
                else "the generated picture moved against the reference")
    return choice, (f"{geometry}: {where} (upper-face mean absolute difference to the reference "
                    f"crops {errors['reference']:.1f} at the reference's boxes, "
                    f"{errors['own']:.1f} at its own)")


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
    """Track, align and crop one pair; problems give a Pair with status `excluded`."""
    faces, audio, videos = options["faces"], options["audio"], options["videos"]
    row = {"video": name, "status": "ok", "reason": ""}
    pair = Pair(name, row)
    try:
        ref = _side(reference, detector, faces, audio)
        gen = _side(generated, detector, faces, audio)
    except InputError as error:
        row.update(status="excluded", reason=str(error))
        return pair
    matched = align_by_time(ref.frames, ref.fps, gen.frames, gen.fps)
    gen_detected = np.where(matched >= 0, gen.detected[np.clip(matched, 0, None)], False)
    usable = (matched >= 0) & ref.detected
    if videos["boxes"] == "own":
        usable &= gen_detected
    row.update(reference_frames=ref.frames, generated_frames=gen.frames,
               reference_fps=ref.fps, generated_fps=gen.fps,
               aligned_frames=int((matched >= 0).sum()),
               reference_face_frames=int(ref.detected.sum()),
               generated_face_frames=int(gen.detected.sum()))
    notes = []
    if ref.frames != gen.frames or abs(ref.fps - gen.fps) > 1e-3:
        notes.append(f"reference {ref.frames} frames at {ref.fps:g} fps, generated "
                     f"{gen.frames} at {gen.fps:g} fps: aligned by time, "
                     f"{int((matched < 0).sum())} reference frames without a generated one")
    if usable.any():
        notes += _crop_pair(pair, ref, gen, np.flatnonzero(usable), matched, gen_detected,
                            options)
    row.update(samples=0 if pair.frames is None else len(pair.frames),
               reason="; ".join(notes))
    if not row["samples"]:
        row.update(status="excluded", reason="; ".join(notes + ["no frame with a face on both "
                                                                 "sides"]))
    return pair


def _crop_pair(pair: Pair, ref: Side, gen: Side, frames: np.ndarray, matched: np.ndarray,
               gen_detected: np.ndarray, options: dict) -> list[str]:
    """Fill `pair`'s crops and mel starts; the notes on where the generated side was cropped."""
    size, audio = int(options["faces"]["image_size"]), options["audio"]
    reference_crops = _crops(ref, frames, [ref.boxes[frames]], size)[0]
    candidates = {"own": gen.boxes[matched[frames]]}
    if options["videos"]["boxes"] == "reference":
        scale = np.array([gen.width / ref.width, gen.height / ref.height] * 2)
        candidates["reference"] = ref.boxes[frames] * scale
    crops = dict(zip(candidates, _crops(gen, matched[frames], list(candidates.values()), size),
                     strict=True))
    choice, note = choose_boxes(reference_crops, crops, ref, gen)
    pair.row["boxes"] = choice
    keep = gen_detected[frames] if choice == "own" else np.ones(len(frames), bool)
    frames, generated_frames = frames[keep], matched[frames][keep]
    window = int(options["videos"]["mel_window"])
    pair.frames = frames
    pair.reference_crops, pair.generated_crops = reference_crops[keep], crops[choice][keep]
    pair.reference_mel, pair.generated_mel = ref.mel, gen.mel
    pair.reference_mel_starts = _mel_starts(frames, ref.fps, ref.mel, audio, window)
    pair.generated_mel_starts = _mel_starts(generated_frames, gen.fps, gen.mel, audio, window)
    return [note] if note else []


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
    refuse_overwriting({"--output": output}, {"--generated": generated, "--reference": reference})
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
