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
import simplejpeg

from lipsync.core.errors import InputError
from lipsync.core.io import atomic_path
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults, resolve
from lipsync.core.progress import progress
from lipsync.core.provenance import describe
from lipsync.data import integrity
from lipsync.data import samples as sample_rules
from lipsync.data.audio import AUDIO_DEFAULTS
from lipsync.data.faces import VIDEO_DEFAULTS
from lipsync.data.splits import read_split, shard_clips

log = get_logger(__name__)

LAYOUTS = ("raw", "compact", "jpeg")
# Config section `dataset`.
DATASET_OPTIONS = {
    "layout": Option("raw", str, "raw: uint8 crops, fastest to read; compact: a lossless PNG per "
                     "crop, smaller on disk; jpeg: a JPEG per crop, as small as LipGAN's JPG "
                     "folders (training splits only: the test split is always packed raw).",
                     one_of=LAYOUTS),
    "chunk_crops": Option(64, int, "Crops per HDF5 chunk.", minimum=1),
    "jpeg_quality": Option(90, int, "JPEG quality of the training crops (layout jpeg), chosen from "
                           "benchmarks/loader.py's quality vs size vs SSIM-to-raw table on real "
                           "s1 crops (docs/scale.md).", minimum=1, maximum=100),
}
DATASET_DEFAULTS = defaults(DATASET_OPTIONS)
# The metrics' ground truth must be exact: a test split asked for jpeg is packed raw.
LOSSLESS_SPLITS = ("test",)
# compact layout: each crop a lossless PNG (chosen by measurement, see benchmarks/loader.py:
# per-crop PNG is smaller than gzip chunks and, unlike a compressed chunk, one random crop costs
# one small decode rather than a whole chunk's)
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]
JPEG_SIGNATURE = b"\xff\xd8"


def encode_png(crop_rgb: np.ndarray) -> np.ndarray:
    """Lossless PNG bytes of an RGB crop (stored as a correct-colour PNG, so it opens anywhere)."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(crop_rgb[..., ::-1]), PNG_PARAMS)
    if not ok:
        raise RuntimeError("cv2.imencode failed for a crop")
    return encoded.reshape(-1)


def encode_jpeg(crop_rgb: np.ndarray, quality: int) -> np.ndarray:
    """JPEG bytes of an RGB crop at `quality` (1-100), stored with correct colours."""
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(crop_rgb[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed for a crop")
    return encoded.reshape(-1)


def decode_crop(buffer, path, crop: int) -> np.ndarray:
    """The RGB crop stored by `encode_png` or `encode_jpeg`; InputError naming the file and crop
    if undecodable. JPEGs go through simplejpeg: on a 96 px crop cv2.imdecode's per-call overhead
    costs more than the decoding (measured 2x slower, same pixels)."""
    buffer = np.asarray(buffer, dtype=np.uint8)
    if buffer[:2].tobytes() == JPEG_SIGNATURE:
        try:
            return simplejpeg.decode_jpeg(buffer.tobytes(), colorspace="RGB")
        except ValueError as error:
            raise InputError(path, f"crop {crop} of /faces is not a decodable JPEG "
                                   f"({error})") from None
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(path, f"crop {crop} of /faces is not a decodable image")
    return image[..., ::-1]  # OpenCV decodes to BGR; crops are RGB


decode_png = decode_crop  # the name the test-set reader imports


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


def dataset_settings(split: str, options: dict) -> dict:
    """The dataset options with defaults, checked; `layout` is what this split is packed as."""
    merged = resolve(DATASET_OPTIONS, options.get("dataset"), "dataset")
    if merged["layout"] == "jpeg" and split in LOSSLESS_SPLITS:
        log.info("split %s packed raw, not jpeg: the metrics' ground truth stays lossless", split)
        merged["layout"] = "raw"
    return merged


@dataclass
class _Plan:
    """Pass 1's result: the clips kept, the counts, the array sizes and where each clip goes."""

    clips: list[_ClipPlan]
    counts: dict
    image_size: int
    mel_bands: int

    def starts(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) per clip of crops, mel steps or samples in the packed arrays."""
        attribute = {"crops": "n_kept", "mels": "mel_steps", "samples": "n_valid"}[what]
        counts = np.array([getattr(p, attribute) for p in self.clips], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64), counts


def _plan_clips(clips_tsv, face_index, mel_index, handles, *, samples_options,
                steps_per_frame) -> _Plan:
    """Pass 1: sizes only (frame lists and mel lengths), no pixels; skips reported, not dropped."""
    clips = read_split(clips_tsv)
    min_distance = int(samples_options["min_reference_distance"])
    plans: list[_ClipPlan] = []
    counts = {"clips_listed": len(clips), "skipped_clips_few_crops": 0,
              "skipped_clips_no_samples": 0, "dropped_samples": 0}
    image_size = mel_bands = None
    for row in clips.itertuples(index=False):
        key = (row.speaker, row.clip)
        if key not in face_index:
            raise InputError(clips_tsv, f"clip {row.speaker}/{row.clip} is in no faces shard")
        if key not in mel_index:
            raise InputError(clips_tsv, f"clip {row.speaker}/{row.clip} is in no mels shard")
        result = _clip_samples(handles, face_index[key], mel_index[key], row.clip,
                               samples_options=samples_options, steps_per_frame=steps_per_frame)
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
            log.warning("clip %s/%s skipped: %d kept crops, too few for reference distance %d",
                        row.speaker, row.clip, plan.n_kept, min_distance)
            continue
        if plan.n_valid == 0:
            counts["skipped_clips_no_samples"] += 1
            log.warning("clip %s/%s skipped: no crop has a mel window inside its %d steps",
                        row.speaker, row.clip, plan.mel_steps)
            continue
        counts["dropped_samples"] += plan.dropped
        plans.append(plan)
    return _Plan(plans, counts, image_size or 96, mel_bands or 80)


def _create_arrays(out: h5py.File, plan: _Plan, dataset_options: dict) -> dict:
    """The packed file's datasets, sized from the plan, and the checksums of the streamed ones."""
    n_crops = int(plan.starts("crops")[1].sum())
    n_steps = int(plan.starts("mels")[1].sum())
    n_samples = int(plan.starts("samples")[1].sum())
    size = plan.image_size
    if dataset_options["layout"] == "raw":
        faces = out.create_dataset("faces", (n_crops, size, size, 3), dtype=np.uint8)
    else:
        chunk = max(1, min(dataset_options["chunk_crops"], n_crops))
        faces = out.create_dataset("faces", (n_crops,), dtype=h5py.vlen_dtype(np.uint8),
                                   chunks=(chunk,) if n_crops else None)
        faces.attrs["encoding"] = "png" if dataset_options["layout"] == "compact" else "jpeg"
    arrays = {
        "faces": faces,
        "mels": out.create_dataset("mels", (n_steps, plan.mel_bands), dtype=np.float32),
        "crop_clip": out.create_dataset("crops/clip_index", (n_crops,), dtype=np.int32),
        "crop_frame": out.create_dataset("crops/frame", (n_crops,), dtype=np.int32),
        "sample_crop": out.create_dataset("samples/crop", (n_samples,), dtype=np.int64),
        "sample_mel": out.create_dataset("samples/mel_start", (n_samples,), dtype=np.int64),
        "sample_ref": out.create_dataset("samples/reference", (n_samples,), dtype=np.int64),
    }
    # hashed as written, in row order, so the two large arrays are never read back
    # (a PNG crop is at most a little larger than the raw crop, hence the bound)
    streamed = {"faces": integrity.new_checksums(faces, 2 * n_crops * size**2 * 3),
                "mels": integrity.new_checksums(arrays["mels"])}
    return {"arrays": arrays, "streamed": streamed}


def _write_faces(target: dict, crops: np.ndarray, c0: int, dataset_options: dict) -> None:
    faces, checksums = target["arrays"]["faces"], target["streamed"]["faces"]
    layout = dataset_options["layout"]
    if layout == "raw":
        faces[c0:c0 + len(crops)] = crops
        checksums.update(np.asarray(crops, dtype=faces.dtype))
        return
    # one crop at a time: h5py takes a block of equal-length buffers for a 2-D array and
    # refuses it
    for j, crop in enumerate(crops):
        encoded = (encode_png(crop) if layout == "compact"
                   else encode_jpeg(crop, dataset_options["jpeg_quality"]))
        faces[c0 + j] = encoded
        checksums.update_rows([encoded])


def _write_clip(target: dict, handles, plan: _ClipPlan, k: int, where: dict, *,
                samples_options, steps_per_frame, dataset_options, rng) -> None:
    """Pass 2 for one clip: its kept crops, its mel and its samples' index rows."""
    arrays = target["arrays"]
    result = _clip_samples(handles, plan.faces_path, plan.mels_path, plan.clip,
                           samples_options=samples_options, steps_per_frame=steps_per_frame)
    group = handles[plan.faces_path][f"clips/{plan.clip}"]
    c0, m0, s0 = (int(where[name][0][k]) for name in ("crops", "mels", "samples"))
    crops = _read(handles, plan.faces_path, f"clips/{plan.clip}/crops")[result.kept]
    _write_faces(target, crops, c0, dataset_options)
    arrays["crop_clip"][c0:c0 + plan.n_kept] = k
    arrays["crop_frame"][c0:c0 + plan.n_kept] = group["frames"][()][result.kept]
    mel = np.ascontiguousarray(_read(handles, plan.mels_path, f"clips/{plan.clip}/mel").T,
                               dtype=np.float32)
    arrays["mels"][m0:m0 + plan.mel_steps] = mel
    target["streamed"]["mels"].update(mel)

    valid = result.valid
    local = np.flatnonzero(valid)  # crop index within the clip's kept crops
    s1 = s0 + plan.n_valid
    arrays["sample_crop"][s0:s1] = c0 + local
    arrays["sample_mel"][s0:s1] = m0 + result.mel_start[valid]
    if rng is not None:
        references = sample_rules.draw_references(
            local, plan.n_kept, int(samples_options["min_reference_distance"]),
            rng.random(len(local)))
        arrays["sample_ref"][s0:s1] = c0 + references
    else:
        arrays["sample_ref"][s0:s1] = -1


def _write_clip_table_and_attrs(out: h5py.File, plan: _Plan, where: dict, config: dict,
                                fixed_references: bool) -> None:
    string = h5py.string_dtype()
    out.create_dataset("clips/speaker", data=np.array([p.speaker for p in plan.clips],
                                                      dtype=object), dtype=string)
    out.create_dataset("clips/clip", data=np.array([p.clip for p in plan.clips], dtype=object),
                       dtype=string)
    for name, what in (("crop", "crops"), ("mel", "mels"), ("sample", "samples")):
        out.create_dataset(f"clips/{name}_start", data=where[what][0])
        out.create_dataset(f"clips/{name}_count", data=where[what][1])
    out.attrs["config"] = json.dumps(config, sort_keys=True)
    out.attrs["provenance"] = json.dumps(describe(), sort_keys=True, default=str)
    out.attrs["layout"] = config["dataset"]["layout"]
    out.attrs["split"] = config["split"]
    out.attrs["image_size"] = int(plan.image_size)
    out.attrs["mel_window"] = int(config["samples"]["mel_window"])
    out.attrs["min_reference_distance"] = int(config["samples"]["min_reference_distance"])
    out.attrs["fixed_references"] = fixed_references
    out.attrs["color"] = "RGB"
    for name, value in plan.counts.items():
        out.attrs[name] = int(value)


def pack_split(split: str, clips_tsv: str | os.PathLike, faces_paths: list[str | os.PathLike],
               mels_paths: list[str | os.PathLike], output: str | os.PathLike, *,
               options: dict) -> dict:
    """Pack the clips listed in `clips_tsv` into `output`; returns the counts stored as attrs."""
    samples_options = {**sample_rules.DEFAULTS, **options.get("samples", {})}
    dataset_options = dataset_settings(split, options)
    audio_options = {key: AUDIO_DEFAULTS[key] for key in ("sample_rate", "hop_length")}
    audio_options |= options.get("audio", {})
    video_options = {"fps": VIDEO_DEFAULTS["fps"], **options.get("video", {})}
    seed = int(options.get("seed", 0))
    steps_per_frame = sample_rules.mel_steps_per_frame(
        audio_options["sample_rate"], audio_options["hop_length"], video_options["fps"])
    config = {"split": split, "samples": samples_options, "dataset": dataset_options,
              "audio": audio_options, "video": video_options, "seed": seed}
    face_index = shard_clips(faces_paths, "crops")
    mel_index = shard_clips(mels_paths, "mel")
    handles: dict[str, h5py.File] = {}
    try:
        plan = _plan_clips(clips_tsv, face_index, mel_index, handles,
                           samples_options=samples_options, steps_per_frame=steps_per_frame)
        where = {what: plan.starts(what) for what in ("crops", "mels", "samples")}
        counts = plan.counts
        counts.update({"clips": len(plan.clips), "crops": int(where["crops"][1].sum()),
                       "samples": int(where["samples"][1].sum()),
                       "mel_steps": int(where["mels"][1].sum())})
        if counts["samples"] == 0:
            log.warning("split %s has no samples (%d clips listed)", split,
                        counts["clips_listed"])
        rng = np.random.default_rng([seed, 0x7E57]) if split == "test" else None
        with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
            target = _create_arrays(out, plan, dataset_options)
            for k, clip in enumerate(progress(plan.clips, desc=f"pack {split}", unit="clip")):
                _write_clip(target, handles, clip, k, where, samples_options=samples_options,
                            steps_per_frame=steps_per_frame, dataset_options=dataset_options,
                            rng=rng)
            _write_clip_table_and_attrs(out, plan, where, config, rng is not None)
            integrity.record_all(out, target["streamed"])
    finally:
        for handle in handles.values():
            handle.close()
    log.info("packed %s: %d clips, %d crops, %d samples (%d samples dropped for mel range, "
             "%d clips with too few crops, %d clips without samples) -> %s", split,
             counts["clips"], counts["crops"], counts["samples"], counts["dropped_samples"],
             counts["skipped_clips_few_crops"], counts["skipped_clips_no_samples"], output)
    return counts
