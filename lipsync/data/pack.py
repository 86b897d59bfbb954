"""Pack one split into a single HDF5 file: kept crops and mels stored once, samples as an index.

Two passes over the shards: the first reads only frame lists and mel lengths to size every
dataset, the second copies one clip at a time, so memory stays flat in the corpus size and every
large dataset is contiguous (LipSyncDataset memory-maps the raw layout). Every array gets block
checksums (lipsync.data.integrity), /faces and /mels as they stream in. Layout: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import cv2
import h5py
import numpy as np

from lipsync.data import integrity
from lipsync.data import samples as sample_rules
from lipsync.data.splits import read_split, shard_clips
from lipsync.errors import InputError
from lipsync.io import atomic_path
from lipsync.logs import get_logger
from lipsync.progress import progress
from lipsync.provenance import describe

log = get_logger(__name__)

LAYOUTS = ("raw", "compact")
DATASET_DEFAULTS = {"layout": "raw", "chunk_crops": 64}
# compact layout: each crop a lossless PNG (chosen by measurement, see benchmarks/loader.py:
# per-crop PNG is smaller than gzip chunks and, unlike a compressed chunk, one random crop costs
# one small decode rather than a whole chunk's)
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]


def encode_png(crop_rgb: np.ndarray) -> np.ndarray:
    """Lossless PNG bytes of an RGB crop (stored as a correct-colour PNG, so it opens anywhere)."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(crop_rgb[..., ::-1]), PNG_PARAMS)
    if not ok:
        raise RuntimeError("cv2.imencode failed for a crop")
    return encoded.reshape(-1)


def decode_png(buffer, path, crop: int) -> np.ndarray:
    """The RGB crop stored by `encode_png`; InputError naming the file and crop if undecodable."""
    image = cv2.imdecode(np.asarray(buffer, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(path, f"crop {crop} of /faces is not a decodable PNG")
    return image[..., ::-1]  # OpenCV decodes to BGR; crops are RGB


@dataclass
class _ClipPlan:
    """What pass 1 keeps per clip: sizes only (pass 2 recomputes the sample arrays), so the
    plan of a 65,000-clip split stays a few MB."""

    speaker: str
    clip: str
    faces_path: str
    mels_path: str
    n_kept: int
    n_valid: int
    dropped: int
    mel_steps: int


def _open(handles: dict[str, h5py.File], path: str) -> h5py.File:
    if path not in handles:
        try:
            handles[path] = h5py.File(path, "r")
        except OSError as error:
            raise InputError(path, f"cannot read HDF5 shard: {error}") from error
    return handles[path]


def _read(handles: dict[str, h5py.File], path: str, name: str) -> np.ndarray:
    """Dataset `name` of shard `path` in memory; a corrupted one is an InputError naming both."""
    try:
        return _open(handles, path)[name][()]
    except OSError as error:  # HDF5 names neither file nor dataset ("Can't synchronously read")
        raise InputError(path, f"{name}: cannot read, the shard is corrupted: {error}") from error


def _clip_samples(handles, faces_path, mels_path, clip, *, samples_options,
                  steps_per_frame) -> sample_rules.ClipSamples:
    faces = _open(handles, faces_path)[f"clips/{clip}"]
    mels = _open(handles, mels_path)[f"clips/{clip}"]
    crops_shape = faces["crops"].shape
    frames = faces["frames"][()]
    if len(crops_shape) != 4 or crops_shape[3] != 3 or crops_shape[1] != crops_shape[2]:
        raise InputError(faces_path, f"clip {clip}: crops have shape {crops_shape}, "
                                     "expected K x S x S x 3")
    if frames.shape != (crops_shape[0],):
        raise InputError(faces_path, f"clip {clip}: {frames.shape[0]} frame indices for "
                                     f"{crops_shape[0]} crops")
    mel_shape = mels["mel"].shape
    if len(mel_shape) != 2:
        raise InputError(mels_path, f"clip {clip}: mel has shape {mel_shape}, expected 80 x T")
    return sample_rules.clip_samples(frames, mel_shape[1], samples_options=samples_options,
                                     steps_per_frame=steps_per_frame)


def pack_split(split: str, clips_tsv: str | os.PathLike, faces_paths: list[str | os.PathLike],
               mels_paths: list[str | os.PathLike], output: str | os.PathLike, *,
               options: dict) -> dict:
    """Pack the clips listed in `clips_tsv` into `output`; returns the counts stored as attrs."""
    samples_options = {**sample_rules.DEFAULTS, **options.get("samples", {})}
    dataset_options = {**DATASET_DEFAULTS, **options.get("dataset", {})}
    audio_options = {"sample_rate": 16000, "hop_length": 200, **options.get("audio", {})}
    video_options = {"fps": 25, **options.get("video", {})}
    seed = int(options.get("seed", 0))
    layout = dataset_options["layout"]
    if layout not in LAYOUTS:
        raise ValueError(f"dataset.layout must be one of {LAYOUTS}, not {layout!r}")
    steps_per_frame = sample_rules.mel_steps_per_frame(
        audio_options["sample_rate"], audio_options["hop_length"], video_options["fps"])
    mel_window = int(samples_options["mel_window"])
    min_distance = int(samples_options["min_reference_distance"])

    clips = read_split(clips_tsv)
    face_index = shard_clips(faces_paths, "crops")
    mel_index = shard_clips(mels_paths, "mel")
    handles: dict[str, h5py.File] = {}
    try:
        # pass 1: sizes only (frame lists and mel lengths), no pixels
        plans: list[_ClipPlan] = []
        counts = {"clips_listed": len(clips), "skipped_clips_few_crops": 0,
                  "skipped_clips_no_samples": 0, "dropped_samples": 0}
        image_size = None
        mel_bands = None
        for row in clips.itertuples(index=False):
            key = (row.speaker, row.clip)
            if key not in face_index:
                raise InputError(clips_tsv, f"clip {row.speaker}/{row.clip} is in no faces shard")
            if key not in mel_index:
                raise InputError(clips_tsv, f"clip {row.speaker}/{row.clip} is in no mels shard")
            result = _clip_samples(handles, face_index[key], mel_index[key], row.clip,
                                   samples_options=samples_options,
                                   steps_per_frame=steps_per_frame)
            plan = _ClipPlan(row.speaker, row.clip, face_index[key], mel_index[key],
                             n_kept=int(result.kept.sum()), n_valid=int(result.valid.sum()),
                             dropped=result.dropped,
                             mel_steps=handles[mel_index[key]][f"clips/{row.clip}/mel"].shape[1])
            size = handles[plan.faces_path][f"clips/{row.clip}/crops"].shape[1]
            bands = handles[plan.mels_path][f"clips/{row.clip}/mel"].shape[0]
            if image_size is None:
                image_size, mel_bands = size, bands
            if size != image_size:
                raise InputError(plan.faces_path, f"clip {row.clip}: crops are {size} px, "
                                                  f"earlier clips {image_size} px")
            if bands != mel_bands:
                raise InputError(plan.mels_path, f"clip {row.clip}: {bands} mel bands, "
                                                 f"earlier clips {mel_bands}")
            if not sample_rules.has_references(plan.n_kept, min_distance):
                counts["skipped_clips_few_crops"] += 1
                log.warning("clip %s/%s skipped: %d kept crops, too few for reference distance "
                            "%d", row.speaker, row.clip, plan.n_kept, min_distance)
                continue
            if plan.n_valid == 0:
                counts["skipped_clips_no_samples"] += 1
                log.warning("clip %s/%s skipped: no crop has a mel window inside its %d steps",
                            row.speaker, row.clip, plan.mel_steps)
                continue
            counts["dropped_samples"] += plan.dropped
            plans.append(plan)
        image_size = image_size or 96
        mel_bands = mel_bands or 80

        crop_counts = np.array([p.n_kept for p in plans], dtype=np.int64)
        mel_counts = np.array([p.mel_steps for p in plans], dtype=np.int64)
        sample_counts = np.array([p.n_valid for p in plans], dtype=np.int64)
        crop_starts = np.concatenate([[0], np.cumsum(crop_counts)[:-1]]).astype(np.int64)
        mel_starts = np.concatenate([[0], np.cumsum(mel_counts)[:-1]]).astype(np.int64)
        sample_starts = np.concatenate([[0], np.cumsum(sample_counts)[:-1]]).astype(np.int64)
        n_crops, n_steps, n_samples = (int(crop_counts.sum()), int(mel_counts.sum()),
                                       int(sample_counts.sum()))
        counts.update({"clips": len(plans), "crops": n_crops, "samples": n_samples,
                       "mel_steps": n_steps})
        if n_samples == 0:
            log.warning("split %s has no samples (%d clips listed)", split, len(clips))

        rng = np.random.default_rng([seed, 0x7E57]) if split == "test" else None
        with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
            if layout == "raw":
                faces = out.create_dataset("faces", (n_crops, image_size, image_size, 3),
                                           dtype=np.uint8)
            else:
                faces = out.create_dataset("faces", (n_crops,), dtype=h5py.vlen_dtype(np.uint8),
                                           chunks=(max(1, min(dataset_options["chunk_crops"],
                                                              n_crops)),) if n_crops else None)
                faces.attrs["encoding"] = "png"
            mels = out.create_dataset("mels", (n_steps, mel_bands), dtype=np.float32)
            crop_clip = out.create_dataset("crops/clip_index", (n_crops,), dtype=np.int32)
            crop_frame = out.create_dataset("crops/frame", (n_crops,), dtype=np.int32)
            sample_crop = out.create_dataset("samples/crop", (n_samples,), dtype=np.int64)
            sample_mel = out.create_dataset("samples/mel_start", (n_samples,), dtype=np.int64)
            sample_ref = out.create_dataset("samples/reference", (n_samples,), dtype=np.int64)
            # hashed as written, in row order, so the two large arrays are never read back
            # (a PNG crop is at most a little larger than the raw crop, hence the bound)
            streamed = {"faces": integrity.new_checksums(faces, 2 * n_crops * image_size**2 * 3),
                        "mels": integrity.new_checksums(mels)}

            for k, plan in enumerate(progress(plans, desc=f"pack {split}", unit="clip")):
                result = _clip_samples(handles, plan.faces_path, plan.mels_path, plan.clip,
                                       samples_options=samples_options,
                                       steps_per_frame=steps_per_frame)
                kept = result.kept
                group = handles[plan.faces_path][f"clips/{plan.clip}"]
                crops = _read(handles, plan.faces_path, f"clips/{plan.clip}/crops")[kept]
                frames = group["frames"][()][kept]
                c0, c1 = crop_starts[k], crop_starts[k] + crop_counts[k]
                if layout == "raw":
                    faces[c0:c1] = crops
                    streamed["faces"].update(np.asarray(crops, dtype=faces.dtype))
                else:
                    # one crop at a time: h5py takes a block of equal-length buffers for a
                    # 2-D array and refuses it
                    for j, crop in enumerate(crops):
                        encoded = encode_png(crop)
                        faces[c0 + j] = encoded
                        streamed["faces"].update_rows([encoded])
                crop_clip[c0:c1] = k
                crop_frame[c0:c1] = frames
                mel = np.ascontiguousarray(
                    _read(handles, plan.mels_path, f"clips/{plan.clip}/mel").T, dtype=mels.dtype)
                mels[mel_starts[k]:mel_starts[k] + mel_counts[k]] = mel
                streamed["mels"].update(mel)

                valid = result.valid
                local = np.flatnonzero(valid)  # crop index within the clip's kept crops
                s0, s1 = sample_starts[k], sample_starts[k] + sample_counts[k]
                sample_crop[s0:s1] = c0 + local
                sample_mel[s0:s1] = mel_starts[k] + result.mel_start[valid]
                if rng is not None:
                    references = sample_rules.draw_references(
                        local, plan.n_kept, min_distance, rng.random(len(local)))
                    sample_ref[s0:s1] = c0 + references
                else:
                    sample_ref[s0:s1] = -1

            string = h5py.string_dtype()
            out.create_dataset("clips/speaker", data=np.array([p.speaker for p in plans],
                                                              dtype=object), dtype=string)
            out.create_dataset("clips/clip", data=np.array([p.clip for p in plans],
                                                           dtype=object), dtype=string)
            out.create_dataset("clips/crop_start", data=crop_starts)
            out.create_dataset("clips/crop_count", data=crop_counts)
            out.create_dataset("clips/mel_start", data=mel_starts)
            out.create_dataset("clips/mel_count", data=mel_counts)
            out.create_dataset("clips/sample_start", data=sample_starts)
            out.create_dataset("clips/sample_count", data=sample_counts)

            config = {"split": split, "samples": samples_options, "dataset": dataset_options,
                      "audio": audio_options, "video": video_options, "seed": seed}
            out.attrs["config"] = json.dumps(config, sort_keys=True)
            out.attrs["provenance"] = json.dumps(describe(), sort_keys=True, default=str)
            out.attrs["layout"] = layout
            out.attrs["split"] = split
            out.attrs["image_size"] = int(image_size)
            out.attrs["mel_window"] = mel_window
            out.attrs["min_reference_distance"] = min_distance
            out.attrs["fixed_references"] = rng is not None
            out.attrs["color"] = "RGB"
            for name, value in counts.items():
                out.attrs[name] = int(value)
            integrity.record_all(out, streamed)
    finally:
        for handle in handles.values():
            handle.close()
    log.info("packed %s: %d clips, %d crops, %d samples (%d samples dropped for mel range, "
             "%d clips with too few crops, %d clips without samples) -> %s", split,
             counts["clips"], counts["crops"], counts["samples"], counts["dropped_samples"],
             counts["skipped_clips_few_crops"], counts["skipped_clips_no_samples"], output)
    return counts
