"""A compact subset of a GRID speaker, small enough to travel inside a working tree.

`pack_subset` runs the pipeline's own steps (manifest, faces, mels, packing) on a seeded choice
of one speaker's clips and writes `train.h5` and `test.h5`; `synthetic_subset` writes the same
two files from random crops and mels when no corpus is at hand. benchmarks/gpu.py reads either.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import write_json, write_tsv
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults

log = get_logger(__name__)

# Options of `lipsync pack-subset` (not a workflow section). 20 + 4 real clips: 1,360 training
# and 272 test samples, 28.7 MB in the compact layout (measured on ../shared/grid-s1), under
# MAX_BYTES with room to spare.
OPTIONS = {
    "train_clips": Option(20, int, "Training clips of the speaker.", minimum=1),
    "test_clips": Option(4, int, "Test clips of the speaker, disjoint from the training ones.",
                         minimum=1),
    "seed": Option(0, int, "Seeds which clips are drawn."),
    "layout": Option("compact", str, "Dataset layout: compact (a PNG per crop) is a third of the "
                     "raw layout's bytes (benchmarks/loader.py).", one_of=("raw", "compact")),
}
DEFAULTS = defaults(OPTIONS)
# What a device machine's 64 MiB working tree can spare for data beside the code.
MAX_BYTES = 40_000_000
FILES = ("train.h5", "test.h5")


def subset_files(folder: str | os.PathLike) -> tuple[Path, Path] | None:
    """(train.h5, test.h5) of a subset folder, or None when either is missing."""
    train, test = (Path(folder) / name for name in FILES)
    return (train, test) if train.is_file() and test.is_file() else None


def _choose(clips: list[str], train_clips: int, test_clips: int,
            seed: int) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(seed).permutation(len(clips))
    test = sorted(clips[k] for k in order[:test_clips])
    train = sorted(clips[k] for k in order[test_clips:test_clips + train_clips])
    return train, test


def _pack_pair(output: Path, faces: Path, mels: Path, train: list[str], test: list[str],
               speaker: str, work: Path, *, layout: str, seed: int) -> dict:
    """Write output/train.h5 and output/test.h5 with the pipeline's packer; return its counts."""
    from lipsync.data.pack import pack_split
    from lipsync.data.splits import shard_clips

    usable = set(shard_clips([faces], "crops")) & set(shard_clips([mels], "mel"))
    counts = {}
    for split, clips, name in (("small", train, "train.h5"), ("test", test, "test.h5")):
        kept = [clip for clip in clips if (speaker, clip) in usable]
        dropped = sorted(set(clips) - set(kept))
        if dropped:
            log.warning("%s: %d chosen clip(s) excluded by face or audio checks: %s", split,
                        len(dropped), ", ".join(dropped))
        if not kept:
            raise LipsyncError(f"no usable clip left for the {split} part of the subset")
        listing = work / f"{split}.tsv"
        write_tsv(listing, pd.DataFrame({"speaker": speaker, "clip": kept}))
        counts[name] = pack_split(split, listing, [faces], [mels], output / name,
                                  options={"dataset": {"layout": layout}, "seed": seed})
        counts[name]["clip_ids"] = kept
    return counts


def _check_size(output: Path) -> int:
    size = sum((output / name).stat().st_size for name in FILES)
    if size > MAX_BYTES:
        raise InputError(output, f"subset is {size:,} bytes, over the {MAX_BYTES:,} a device "
                                 "machine's working tree can carry; use fewer clips")
    return size


def pack_subset(root: str | os.PathLike, output: str | os.PathLike, *, speaker: str = "s1",
                train_clips: int = DEFAULTS["train_clips"],
                test_clips: int = DEFAULTS["test_clips"], seed: int = DEFAULTS["seed"],
                layout: str = DEFAULTS["layout"], options: dict | None = None,
                threads: int = 1) -> dict:
    """Pack `train_clips` + `test_clips` disjoint clips of `speaker` under `root` (a local GRID
    copy) into output/train.h5 and output/test.h5 through the pipeline's own faces, mels and
    pack steps. `options` holds the `faces`, `video` and `audio` config sections (defaults as
    the pipeline's). Intermediate shards are removed; output/subset.json describes the result."""
    from lipsync.data import audio, faces, local
    from lipsync.data.manifest import write_manifest

    options = options or {}
    output = Path(output)
    entries = local.find_clips(speaker, root)
    if len(entries) < train_clips + test_clips:
        raise InputError(root, f"speaker {speaker} has {len(entries)} clips, fewer than "
                               f"{train_clips} + {test_clips}")
    train, test = _choose([e.clip for e in entries], train_clips, test_clips, seed)
    chosen = set(train) | set(test)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output, prefix=".work-") as folder:
        work = Path(folder)
        manifest = work / "manifest.tsv"
        write_manifest(manifest, [e for e in entries if e.clip in chosen])
        faces_path, mels_path = work / speaker / "faces.h5", work / speaker / "mels.h5"
        faces.extract_shard(manifest, 0, 0, faces_path, work / "coverage.tsv",
                            options={"faces": options.get("faces", {}),
                                     "video": options.get("video", {})}, threads=threads)
        audio.compute_shard(manifest, 0, 0, mels_path,
                            options={"audio": options.get("audio", {}), "source": "track"})
        counts = _pack_pair(output, faces_path, mels_path, train, test, speaker, work,
                            layout=layout, seed=seed)
    return _describe(output, counts, source=str(Path(root).resolve()), speaker=speaker,
                     seed=seed, layout=layout)


def _smooth_crops(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Blocky colour fields with mild noise: they compress about as real faces do."""
    coarse = rng.integers(30, 225, (1, size // 8, size // 8, 3)).astype(np.float32)
    frames = np.repeat(coarse, n, axis=0).repeat(8, axis=1).repeat(8, axis=2)
    frames += rng.normal(0, 3, frames.shape).astype(np.float32)
    return np.clip(frames, 0, 255).astype(np.uint8)


def synthetic_subset(output: str | os.PathLike, *, train_clips: int = 4, test_clips: int = 1,
                     frames: int = 75, image_size: int = 96, seed: int = 0,
                     layout: str = "raw") -> dict:
    """The same two files as `pack_subset`, from random crops and mels (no corpus, no decoding):
    for benchmarks and tests on a machine without GRID footage."""
    from lipsync.data.audio import AUDIO_DEFAULTS
    from lipsync.data.faces import VIDEO_DEFAULTS
    from lipsync.data.samples import mel_steps_per_frame

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    steps = int(frames * mel_steps_per_frame(AUDIO_DEFAULTS["sample_rate"],
                                             AUDIO_DEFAULTS["hop_length"],
                                             VIDEO_DEFAULTS["fps"])) + 1
    clips = [f"synthetic{k:03d}" for k in range(train_clips + test_clips)]
    speaker = "synthetic"
    with tempfile.TemporaryDirectory(dir=output, prefix=".work-") as folder:
        work = Path(folder)
        faces_path, mels_path = work / "faces.h5", work / "mels.h5"
        with h5py.File(faces_path, "w") as faces, h5py.File(mels_path, "w") as mels:
            faces.attrs["speaker"] = mels.attrs["speaker"] = speaker
            for clip in clips:
                group = faces.create_group(f"clips/{clip}")
                group["crops"] = _smooth_crops(rng, frames, image_size)
                group["frames"] = np.arange(frames, dtype=np.int32)
                group["detected"] = np.ones(frames, bool)
                group["boxes"] = np.zeros((frames, 4), np.float32)
                mels[f"clips/{clip}/mel"] = rng.standard_normal(
                    (AUDIO_DEFAULTS["n_mels"], steps)).astype(np.float32)
        counts = _pack_pair(output, faces_path, mels_path, clips[:train_clips],
                            clips[train_clips:], speaker, work, layout=layout, seed=seed)
    return _describe(output, counts, source="synthetic", speaker=speaker, seed=seed,
                     layout=layout)


def _describe(output: Path, counts: dict, **fields) -> dict:
    from lipsync.core.provenance import describe

    summary = {**fields, "bytes": _check_size(output),
               **{name.removesuffix(".h5"): {"clips": counts[name]["clip_ids"],
                                             "samples": int(counts[name]["samples"]),
                                             "bytes": (output / name).stat().st_size}
                  for name in FILES},
               "provenance": describe()}
    write_json(output / "subset.json", summary)
    log.info("subset in %s: %d train and %d test samples, %.1f MB", output,
             summary["train"]["samples"], summary["test"]["samples"], summary["bytes"] / 1e6)
    return summary


__all__ = ["DEFAULTS", "MAX_BYTES", "pack_subset", "subset_files", "synthetic_subset"]
