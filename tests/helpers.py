"""Test helpers: faces/mels shard files and coverage TSVs in the format of docs/ARCHITECTURE.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd


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
