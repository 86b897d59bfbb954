"""Test helpers: GRID-like clips made in the test, faces/mels shard files and coverage TSVs in the
format of docs/ARCHITECTURE.md, test and generated sets for the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import pandas as pd
from skimage import data

# --- GRID-like media files (mpeg1video + MP2 as GRID, wav) -----------------------------------

FRAME_HEIGHT, FRAME_WIDTH = 288, 360


def face_frames(n_frames: int, *, face: bool = True, shift: int = 2) -> np.ndarray:
    """GRID-sized RGB frames on grey with the astronaut's face (200 px) drifting right."""
    frames = np.full((n_frames, FRAME_HEIGHT, FRAME_WIDTH, 3), 120, np.uint8)
    if face:
        patch = cv2.resize(data.astronaut()[0:260, 90:350], (200, 200),
                           interpolation=cv2.INTER_AREA)
        for i in range(n_frames):
            x = 60 + shift * i
            frames[i, 40:240, x:x + 200] = patch
    return frames


def sine(seconds: float, sample_rate: int, frequency: float = 440.0,
         amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_mpg(path: Path, frames: np.ndarray, *, fps: int = 25, audio: np.ndarray | None = None,
              sample_rate: int = 44100) -> Path:
    """An MPEG-1 program stream like GRID's: mpeg1video, optionally a stereo MP2 track of `audio`."""
    with av.open(str(path), "w", format="mpeg") as container:
        video = container.add_stream("mpeg1video", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        track = None
        if audio is not None:
            track = container.add_stream("mp2", rate=sample_rate)
            track.layout = "stereo"
            samples = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            per_frame = int(np.ceil(len(samples) / len(frames)))
        for i, frame in enumerate(frames):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            # Interleave audio with the pictures, as a real program stream does, so that a file
            # cut short loses the end of both.
            if track is not None and len(part := samples[i * per_frame:(i + 1) * per_frame]):
                chunk = av.AudioFrame.from_ndarray(np.repeat(part, 2)[None, :], format="s16",
                                                   layout="stereo")  # packed: L R L R ...
                chunk.sample_rate = sample_rate
                chunk.pts = i * per_frame
                container.mux(track.encode(chunk))
        container.mux(video.encode(None))
        if track is not None:
            container.mux(track.encode(None))
    return path


def truncate_at_video_frame(source: Path, target: Path, frame: int) -> Path:
    """Copy `source` cut where its `frame`-th video packet starts, as an interrupted download."""
    with av.open(str(source)) as container:
        positions = [packet.pos for packet in container.demux(video=0)
                     if packet.pos is not None and packet.size]
    cut = positions[min(frame, len(positions) - 1)]
    target.write_bytes(source.read_bytes()[:cut])
    return target


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate)
        stream.layout = "mono"
        samples = (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None, :]
        chunk = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        chunk.sample_rate = sample_rate
        container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return path


# --- preprocessing shards ----------------------------------------------------------------------


@dataclass
class ShardFiles:
    faces: list[Path] = field(default_factory=list)
    mels: list[Path] = field(default_factory=list)
    coverage: list[Path] = field(default_factory=list)
    clips: dict[str, list[str]] = field(default_factory=dict)  # speaker -> clips with faces


def patterned_crop(clip_number: int, frame: int, image_size: int) -> np.ndarray:
    """A crop that says where it came from: red = frame, green = clip number, blue = row."""
    crop = np.empty((image_size, image_size, 3), np.uint8)
    crop[..., 0] = frame % 256
    crop[..., 1] = clip_number % 256
    crop[..., 2] = (np.arange(image_size) * 255 // max(image_size - 1, 1))[:, None]
    return crop


def photo_crops(n_frames: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Crops that compress like real faces: scikit-image's astronaut face, drifting a few pixels
    from frame to frame, with mild sensor noise."""
    import cv2
    from skimage import data

    face = data.astronaut()[20:220, 140:340]
    crops = np.empty((n_frames, image_size, image_size, 3), np.uint8)
    dx, dy = rng.integers(0, 20, 2)
    for f in range(n_frames):
        dx = int(np.clip(dx + rng.integers(-2, 3), 0, 40))
        dy = int(np.clip(dy + rng.integers(-2, 3), 0, 40))
        crop = cv2.resize(face[dy:dy + 160, dx:dx + 160], (image_size, image_size),
                          interpolation=cv2.INTER_AREA)
        noise = rng.normal(0, 1.0, crop.shape)
        crops[f] = np.clip(crop + noise, 0, 255).astype(np.uint8)
    return crops


def make_shard_files(tmp_path: Path, *, speakers: tuple[str, ...] = ("s1",), clips: int = 3,
                     n_frames: int = 75, image_size: int = 96, mel_steps: int = 241,
                     n_mels: int = 80, pattern: str = "random", seed: int = 0,
                     mel_steps_by_clip: dict[str, int] | None = None,
                     excluded: tuple[str, ...] = (), no_mel: tuple[str, ...] = ()) -> ShardFiles:
    """Write faces/{speaker}/0.h5, mels/{speaker}/0.h5 and faces/{speaker}/0.coverage.tsv.

    Clips are named c000, c001, ... per speaker. Clips in `excluded` get coverage status
    `excluded` and no crops; clips in `no_mel` have crops but no mel. `pattern` is "random"
    (uniform noise), "patterned" (see patterned_crop) or "photo" (see photo_crops). Crops cover ALL frames of each clip.
    """
    rng = np.random.default_rng(seed)
    tmp_path = Path(tmp_path)
    files = ShardFiles()
    number = 0
    for speaker in speakers:
        faces_path = tmp_path / "faces" / speaker / "0.h5"
        mels_path = tmp_path / "mels" / speaker / "0.h5"
        coverage_path = tmp_path / "faces" / speaker / "0.coverage.tsv"
        faces_path.parent.mkdir(parents=True, exist_ok=True)
        mels_path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        files.clips[speaker] = []
        with h5py.File(faces_path, "w") as faces, h5py.File(mels_path, "w") as mels:
            faces.attrs["speaker"] = speaker
            mels.attrs["speaker"] = speaker
            for k in range(clips):
                clip = f"c{k:03d}"
                number += 1
                if clip in excluded:
                    rows.append([speaker, clip, n_frames, n_frames // 2, 0.5, "excluded",
                                 "face coverage 0.50 < 0.90"])
                    continue
                rows.append([speaker, clip, n_frames, n_frames, 1.0, "ok", ""])
                files.clips[speaker].append(clip)
                frames = np.arange(n_frames, dtype=np.int32)
                if pattern == "patterned":
                    crops = np.stack([patterned_crop(number, f, image_size) for f in frames])
                elif pattern == "photo":
                    crops = photo_crops(n_frames, image_size, rng)
                else:
                    crops = rng.integers(0, 256, (n_frames, image_size, image_size, 3), np.uint8)
                group = faces.create_group(f"clips/{clip}")
                group.attrs["speaker"] = speaker
                group["crops"] = crops
                group["frames"] = frames
                group["detected"] = np.ones(n_frames, bool)
                group["boxes"] = np.zeros((n_frames, 4), np.float32)
                if clip in no_mel:
                    continue
                steps = (mel_steps_by_clip or {}).get(clip, mel_steps)
                mels[f"clips/{clip}/mel"] = rng.standard_normal((n_mels, steps)).astype(np.float32)
        pd.DataFrame(rows, columns=["speaker", "clip", "frames", "detected", "coverage",
                                    "status", "reason"]).to_csv(coverage_path, sep="\t",
                                                                index=False)
        files.faces.append(faces_path)
        files.mels.append(mels_path)
        files.coverage.append(coverage_path)
    return files


# --- test sets and generated sets for the metrics (docs/ARCHITECTURE.md's HDF5 contract) ---------

METRIC_CLIPS = [("s1", "bbaf2n"), ("s2", "lgaz8p")]
CROPS_PER_CLIP = 6
# Offline plumbing: seeded random Inception, first block (64-d) so tests take seconds.
EVALUATE_OPTIONS = {"metrics": ["fid", "kid", "ssim", "psnr"],
                    "fid": {"random_weights": True, "dims": 64, "batch_size": 8},
                    "kid": {"subsets": 10, "subset_size": 1000, "seed": 0},
                    "bootstrap": {"resamples": 200, "set_resamples": 5},
                    "batch_size": 5}


def smooth_faces(count: int, seed: int, size: int = 96) -> np.ndarray:
    """Face-sized uint8 RGB images with smooth structure plus noise (so SSIM is not trivial)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 225, (count, 12, 12, 3)).astype(np.float64)
    images = coarse.repeat(size // 12, axis=1).repeat(size // 12, axis=2)
    images += rng.normal(0, 12, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def write_test_set(path, *, reference_self: tuple[int, ...] = (0,), seed: int = 0,
                   faces: np.ndarray | None = None, clips=None,
                   crops_per_clip: int = CROPS_PER_CLIP, mel_steps_per_clip: int = 0
                   ) -> np.ndarray:
    """A test split per docs/ARCHITECTURE.md; samples = every crop; returns the faces.

    Each sample's fixed reference is three crops later in its clip, except the samples in
    `reference_self`, whose reference is their own target (the identity run then copies it).
    `mel_steps_per_clip` > 0 stores a random mel of that many steps per clip.
    """
    clips = clips or METRIC_CLIPS
    n_crops = len(clips) * crops_per_clip
    faces = smooth_faces(n_crops, seed) if faces is None else faces
    clip_index = np.repeat(np.arange(len(clips)), crops_per_clip).astype(np.int32)
    frames = np.tile(np.arange(4, 4 + crops_per_clip), len(clips)).astype(np.int32)
    crops = np.arange(n_crops, dtype=np.int64)
    within = crops % crops_per_clip
    reference = crops - within + (within + 3) % crops_per_clip
    reference[list(reference_self)] = crops[list(reference_self)]
    steps = max(mel_steps_per_clip, 0)
    with h5py.File(path, "w") as handle:
        handle["faces"] = faces
        handle["mels"] = np.random.default_rng(seed).standard_normal(
            (steps * len(clips), 80)).astype(np.float32)
        handle["clips/speaker"] = np.array([s for s, _ in clips], dtype=object)
        handle["clips/clip"] = np.array([c for _, c in clips], dtype=object)
        handle["clips/crop_start"] = np.arange(len(clips), dtype=np.int64) * crops_per_clip
        handle["clips/crop_count"] = np.full(len(clips), crops_per_clip, dtype=np.int64)
        handle["clips/mel_start"] = np.arange(len(clips), dtype=np.int64) * steps
        handle["clips/mel_count"] = np.full(len(clips), steps, dtype=np.int64)
        handle["crops/clip_index"] = clip_index
        handle["crops/frame"] = frames
        handle["samples/crop"] = crops
        handle["samples/mel_start"] = np.zeros(n_crops, dtype=np.int64)
        handle["samples/reference"] = reference.astype(np.int64)
        handle.attrs["layout"] = "raw"
        handle.attrs["image_size"] = faces.shape[1]
    return faces


def write_generated(path, faces: np.ndarray, model: str = "lipgan") -> None:
    with h5py.File(path, "w") as handle:
        handle["faces"] = faces
        handle.attrs["model"] = model
        handle.attrs["checkpoint"] = f"train/{Path(path).stem}/generator.pt"


def noisy(faces: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(faces + rng.normal(0, sigma, faces.shape), 0, 255).astype(np.uint8)


def identity_faces(test_path) -> np.ndarray:
    with h5py.File(test_path, "r") as handle:
        return handle["faces"][()][handle["samples/reference"][()]]


def score_all(folder: Path, test_path: Path, generated: Path, options: dict, run: str = ""
              ) -> dict:
    """Reference data for every configured metric that has any, then score one generated set;
    writes folder/reference/{metric}.npz and folder/metrics/{run}/... and returns the summary."""
    from lipsync.metrics import score

    return score.score_with_references(generated, test_path, folder / "reference",
                                       folder / "metrics" / (run or Path(generated).stem),
                                       options=options, reuse_references=True)
