"""Loader benchmark: LipSyncDataset (packed HDF5) against the LipGAN/Wav2Lip JPG-folder layout.

Prints, from one run: samples/s through a DataLoader (batch 96, shuffled) for each worker count
and layout and for the JPG-folder baseline, with the ratio; bytes per sample of the raw and
compact and jpeg layouts (and the candidates the compact layout and the JPEG quality were
chosen from) with the projected GRIDFull size; resident memory at two dataset sizes (loader and packer) to show it stays flat;
seconds per GB of the checksum verification every open does, projected to GRIDFull.

    .venv/bin/python benchmarks/loader.py                  # synthetic shards, packed here
    .venv/bin/python benchmarks/loader.py --dataset results/datasets/full.h5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from helpers import make_shard_files  # noqa: E402

from lipsync.data import integrity  # noqa: E402
from lipsync.data.dataset import LipSyncDataset, collate  # noqa: E402
from lipsync.data.pack import (  # noqa: E402
    DATASET_DEFAULTS,
    decode_crop,
    encode_jpeg,
    encode_png,
    pack_split,
)
from lipsync.data.samples import draw_references  # noqa: E402

GRID_FULL_SAMPLES = 2_190_517
BATCH = 96


def memory_kib() -> dict[str, int]:
    """VmRSS (resident), RssAnon (heap: what grows if a loader holds data) and VmHWM (peak)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class JpgFolderDataset(Dataset):
    """The baseline: LipGAN/Wav2Lip layout, one folder per clip with <frame>.jpg crops and a
    mels.npy (80 x T), read with cv2.imread per image and np.load per sample."""

    def __init__(self, root: Path, table: pd.DataFrame, *, image_size: int, mel_window: int,
                 min_distance: int, seed: int = 0):
        self.root, self.table = root, table
        self.image_size, self.mel_window, self.min_distance = image_size, mel_window, min_distance
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.table)

    def _image(self, folder: str, frame: int) -> torch.Tensor:
        image = cv2.imread(str(self.root / folder / f"{frame}.jpg"))
        return torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1).float() / 255.0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.table.iloc[index]
        frames = self.root / row.folder
        candidates = [f for f in range(row.first_frame, row.first_frame + row.n_crops)
                      if abs(f - row.frame) >= self.min_distance]
        reference_frame = int(self.rng.choice(candidates))
        target = self._image(row.folder, int(row.frame))
        reference = self._image(row.folder, reference_frame)
        mel = np.load(frames / "mels.npy")[:, row.mel_start:row.mel_start + self.mel_window]
        masked = target.clone()
        masked[:, self.image_size // 2:] = 0.0
        return {"generator_input": torch.cat([reference, masked]),
                "mel": torch.from_numpy(np.ascontiguousarray(mel, np.float32))[None],
                "target": target, "reference": reference}


def export_jpg_folders(dataset_path: Path, root: Path) -> pd.DataFrame:
    """Write the packed dataset's crops and mels in the JPG-folder layout; one row per sample."""
    with h5py.File(dataset_path, "r") as f:
        clips = {key: f[f"clips/{key}"][()] for key in ("crop_start", "crop_count", "mel_start",
                                                        "mel_count")}
        crop_frame = f["crops/frame"][()]
        crop_clip = f["crops/clip_index"][()]
        sample_crop = f["samples/crop"][()]
        sample_mel = f["samples/mel_start"][()]
        faces = LipSyncDataset(dataset_path)
        for k in range(len(clips["crop_start"])):
            folder = root / f"{k:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            start, count = clips["crop_start"][k], clips["crop_count"][k]
            for offset, crop in enumerate(faces.read_faces(np.arange(start, start + count))):
                cv2.imwrite(str(folder / f"{crop_frame[start + offset]}.jpg"), crop[..., ::-1])
            m0, m1 = clips["mel_start"][k], clips["mel_start"][k] + clips["mel_count"][k]
            np.save(folder / "mels.npy", f["mels"][m0:m1].T.copy())
        faces.close()
    clip = crop_clip[sample_crop]
    return pd.DataFrame({
        "folder": [f"{k:05d}" for k in clip],
        "frame": crop_frame[sample_crop],
        "first_frame": crop_frame[clips["crop_start"][clip]],
        "n_crops": clips["crop_count"][clip],
        "mel_start": sample_mel - clips["mel_start"][clip],
    })


def transcode(raw_path: Path, output: Path, layout: str = "compact",
              quality: int = DATASET_DEFAULTS["jpeg_quality"]) -> None:
    """A compact (PNG) or jpeg copy of a packed raw file, same index, as pack_split writes it."""
    with h5py.File(raw_path, "r") as source, h5py.File(output, "w") as out:
        for name in source:
            if name != "faces":
                source.copy(source[name], out, name)
        for key, value in source.attrs.items():
            out.attrs[key] = value
        out.attrs["layout"] = layout
        faces = source["faces"]
        target = out.create_dataset("faces", (len(faces),), dtype=h5py.vlen_dtype(np.uint8),
                                    chunks=(64,))
        target.attrs["encoding"] = "png" if layout == "compact" else "jpeg"
        for start in range(0, len(faces), 1024):
            block = faces[start:start + 1024]
            for j, crop in enumerate(block):
                target[start + j] = (encode_png(crop) if layout == "compact"
                                     else encode_jpeg(crop, quality))
        integrity.record_all(out)


def jpeg_quality_table(dataset_path: Path, n: int = 512) -> list[dict]:
    """Bytes per crop, SSIM to the raw crop (scikit-image's protocol) and decode time per JPEG
    quality: the table dataset.jpeg_quality's default was chosen from."""
    from lipsync.metrics.kernels import ssim_torch

    source = LipSyncDataset(dataset_path)
    total = source_faces(dataset_path)
    rng = np.random.default_rng(1)
    crops = source.read_faces(np.sort(rng.choice(total, min(n, total), replace=False)))
    source.close()
    rows = []
    for quality in (75, 85, 90, 95, 98):
        encoded = [encode_jpeg(c, quality) for c in crops]
        start = time.perf_counter()
        decoded = np.stack([decode_crop(e, dataset_path, 0) for e in encoded])
        decode = (time.perf_counter() - start) / len(encoded)
        ssim = ssim_torch(decoded, crops)
        rows.append({"jpeg_quality": quality, "bytes_per_crop": np.mean([len(e) for e in encoded]),
                     "ssim_to_raw_mean": ssim.mean(), "ssim_to_raw_min": ssim.min(),
                     "decode_us_per_crop": decode * 1e6})
    return rows


def loader_speed(dataset: Dataset, *, workers: int, batches: int, collate_fn) -> float:
    """Samples per second over `batches` shuffled batches, after one warm-up batch."""
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        collate_fn=collate_fn, generator=generator,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    iterator = iter(loader)
    next(iterator)
    # the workers prefetch 4 batches each while the first one is awaited: time well past them
    start, seen = time.perf_counter(), 0
    for _ in range(max(batches, 4 * workers + 8)):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        seen += batch["target"].shape[0]
    return seen / (time.perf_counter() - start)


def compact_candidates(dataset_path: Path, work: Path, n: int = 768) -> list[dict]:
    """Bytes per crop and random-read cost of the encodings the compact layout was chosen from."""
    source = LipSyncDataset(dataset_path)
    rng = np.random.default_rng(0)
    crops = source.read_faces(np.sort(rng.choice(source_faces(dataset_path),
                                                  min(n, source_faces(dataset_path)),
                                                  replace=False)))
    source.close()
    rows = []
    for name, params in [("png-1", [cv2.IMWRITE_PNG_COMPRESSION, 1]),
                         ("png-3 (compact)", [cv2.IMWRITE_PNG_COMPRESSION, 3]),
                         ("png-9", [cv2.IMWRITE_PNG_COMPRESSION, 9]),
                         ("jpeg-95 (lossy)", [cv2.IMWRITE_JPEG_QUALITY, 95])]:
        extension = ".jpg" if name.startswith("jpeg") else ".png"
        encoded = [cv2.imencode(extension, c[..., ::-1], params)[1] for c in crops]
        start = time.perf_counter()
        for buffer in encoded:
            cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        decode = (time.perf_counter() - start) / len(encoded)
        rows.append({"encoding": name, "bytes_per_crop": np.mean([len(e) for e in encoded]),
                     "read_us_per_random_crop": decode * 1e6})
    for name, kwargs in [("gzip-4, 64-crop chunks", {"compression": "gzip", "chunks": 64}),
                         ("gzip-4, 1-crop chunks", {"compression": "gzip", "chunks": 1}),
                         ("lzf, 64-crop chunks", {"compression": "lzf", "chunks": 64}),
                         ("raw uint8", {})]:
        path = work / "candidate.h5"
        with h5py.File(path, "w") as f:
            if "chunks" in kwargs:
                shape = (kwargs.pop("chunks"),) + crops.shape[1:]
                f.create_dataset("faces", data=crops, chunks=shape, shuffle=True, **kwargs)
            else:
                f.create_dataset("faces", data=crops)
        with h5py.File(path, "r", rdcc_nbytes=0) as f:  # no chunk cache: random reads
            faces = f["faces"]
            stored = faces.id.get_storage_size()
            picks = np.sort(rng.choice(len(crops), 96, replace=False))
            start = time.perf_counter()
            for k in picks:
                faces[int(k)]
            read = (time.perf_counter() - start) / len(picks)
        rows.append({"encoding": name, "bytes_per_crop": stored / len(crops),
                     "read_us_per_random_crop": read * 1e6})
        path.unlink()
    return rows


def verify_speed(path: Path, repeats: int = 3) -> dict[str, float]:
    """Seconds per GB of `integrity.verify` (best of `repeats`; the file is in the page cache
    after the first, so this is the CPU cost: a cold read adds the disk's own time)."""
    size = path.stat().st_size
    best = float("inf")
    for _ in range(repeats):
        integrity._verified.clear()
        start = time.perf_counter()
        integrity.verify(path)
        best = min(best, time.perf_counter() - start)
    per_gb = best / (size / 1e9)
    return {"bytes": size, "seconds": best, "seconds_per_gb": per_gb,
            "projected_gridfull_seconds": per_gb * size / 1e9 / n_samples_of(path)
            * GRID_FULL_SAMPLES}


def n_samples_of(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return len(f["samples/crop"])


def source_faces(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return len(f["faces"])


def _child(function, args, queue):
    torch.set_num_threads(1)
    queue.put(function(*args))


def in_child(function, *args):
    """Run function(*args) in a fresh process, so memory figures are that work's alone."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(function, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _pack_and_measure(split, clips, faces, mels, output, options) -> int:
    pack_split(split, clips, faces, mels, output, options=options)
    return memory_kib()["VmHWM"]


def synthetic_dataset(work: Path, clips: int, image_size: int, tag: str) -> tuple[Path, int]:
    """Pack `clips` synthetic photo-like clips; returns the raw file and the packer's peak KiB."""
    shards = make_shard_files(work / f"shards-{tag}", clips=clips, image_size=image_size,
                              pattern="photo", seed=clips)
    table = work / f"clips-{tag}.tsv"
    pd.DataFrame([("s1", c) for c in shards.clips["s1"]], columns=["speaker", "clip"]).to_csv(
        table, sep="\t", index=False)
    output = work / f"{tag}.h5"
    options = {"samples": {}, "dataset": {"layout": "raw"}, "audio": {}, "video": {}, "seed": 0}
    peak = in_child(_pack_and_measure, "full", table, shards.faces, shards.mels, output, options)
    shutil.rmtree(work / f"shards-{tag}")
    return output, peak


def loader_memory(path: Path, batches: int) -> dict[str, int]:
    """Memory of this process after reading `batches` batches in-process (0 workers)."""
    dataset = LipSyncDataset(path)
    loader_speed(dataset, workers=0, batches=batches, collate_fn=collate)
    memory = memory_kib()
    dataset.close()
    return memory


def speed_row(paths: dict[str, Path], baseline: Dataset, workers: int, batches: int) -> dict:
    """Samples/s of every layout (float items, and uint8 items for raw and jpeg) and of the JPG
    folders at one worker count, with the ratios."""
    row = {"workers": workers}
    for layout, path in paths.items():
        row[f"{layout}_samples_per_s"] = loader_speed(
            LipSyncDataset(path), workers=workers, batches=batches, collate_fn=collate)
    # What the training loop reads: uint8 crops, scaled and masked on the device.
    for layout in ("raw", "jpeg"):
        row[f"{layout}_uint8_samples_per_s"] = loader_speed(
            LipSyncDataset(paths[layout], uint8=True), workers=workers, batches=batches,
            collate_fn=collate)
    row["jpg_samples_per_s"] = loader_speed(baseline, workers=workers,
                                            batches=max(3, batches // 4), collate_fn=None)
    for layout in ("raw", "compact", "raw_uint8", "jpeg", "jpeg_uint8"):
        row[f"{layout}_over_jpg"] = row[f"{layout}_samples_per_s"] / row["jpg_samples_per_s"]
    return row


def print_report(report: dict) -> None:
    print(json.dumps(report, indent=2, default=float))
    print("\nsamples/s (batch 96, shuffled):")
    print(pd.DataFrame(report["speeds"]).round(1).to_string(index=False))
    print("\nbytes per sample and projected GRIDFull size (2,190,517 samples):")
    print(pd.DataFrame(report["sizes"]).T.round(2).to_string())
    print("\nchecksum verification on open (page cache warm; GRIDFull projected):")
    print(pd.DataFrame(report["verify"]).T.round(3).to_string())
    print("\njpeg layout: quality vs size vs SSIM to the raw crop (dataset.jpeg_quality):")
    print(pd.DataFrame(report["jpeg_quality"]).round(4).to_string(index=False))
    print("\ncompact-layout candidates:")
    print(pd.DataFrame(report["compact_candidates"]).round(1).to_string(index=False))
    for row in report["speeds"]:
        print(f"\n{row['workers']} workers: LipSyncDataset vs JPG folders at the same worker "
              f"count: float items {row['raw_over_jpg']:.1f}x, uint8 items (training) "
              f"{row['raw_uint8_over_jpg']:.1f}x (target >= 10x); jpeg layout: float items "
              f"{row['jpeg_over_jpg']:.1f}x, uint8 items {row['jpeg_uint8_over_jpg']:.1f}x "
              "(target >= 5x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None, help="an existing packed raw file")
    parser.add_argument("--clips", type=int, default=40, help="synthetic clips (smaller size)")
    parser.add_argument("--scale", type=int, default=4, help="larger size = clips x scale")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    work = Path(tempfile.mkdtemp(prefix="loader-bench-", dir=args.work_dir))
    report: dict = {}
    try:
        if args.dataset is None:
            small, peak_small = synthetic_dataset(work, args.clips, args.image_size, "small")
            large, peak_large = synthetic_dataset(work, args.clips * args.scale, args.image_size,
                                                  "large")
            report["pack_peak_kib"] = {str(small.name): peak_small, str(large.name): peak_large}
            raw = large
        else:
            raw, small = args.dataset, None
        with h5py.File(raw, "r") as f:
            if f.attrs["layout"] != "raw":
                raise SystemExit(f"{raw}: benchmark needs a raw-layout file")
            n_samples, n_crops = len(f["samples/crop"]), len(f["faces"])
        compact, jpeg = work / "compact.h5", work / "jpeg.h5"
        transcode(raw, compact, "compact")
        transcode(raw, jpeg, "jpeg")
        report["dataset"] = {"path": str(raw), "samples": n_samples, "crops": n_crops}

        sizes = {}
        layouts = (("raw", raw), ("compact", compact), ("jpeg", jpeg))
        for layout, path in layouts:
            size = path.stat().st_size
            sizes[layout] = {"bytes": size, "bytes_per_sample": size / n_samples,
                             "projected_gridfull_gb": size / n_samples * GRID_FULL_SAMPLES / 1e9}
        report["sizes"] = sizes
        report["verify"] = {layout: verify_speed(path) for layout, path in layouts}
        report["compact_candidates"] = compact_candidates(raw, work)
        report["jpeg_quality"] = jpeg_quality_table(raw)

        table = export_jpg_folders(raw, work / "jpg")
        jpg_bytes = sum(p.stat().st_size for p in (work / "jpg").rglob("*") if p.is_file())
        sizes["jpg-folders"] = {"bytes": jpg_bytes, "bytes_per_sample": jpg_bytes / n_samples,
                                "projected_gridfull_gb": jpg_bytes / n_samples
                                * GRID_FULL_SAMPLES / 1e9}
        config = LipSyncDataset(raw)
        baseline = JpgFolderDataset(work / "jpg", table, image_size=config.image_size,
                                    mel_window=config.mel_window,
                                    min_distance=config.min_reference_distance)
        report["speeds"] = [speed_row(dict(layouts), baseline, workers, args.batches)
                            for workers in args.workers]
        # draw_references is the only per-sample Python-free step; sanity-check it is cheap
        start = time.perf_counter()
        draw_references(np.arange(BATCH) % 68, 68, 6, np.random.default_rng(0).random(BATCH))
        report["reference_draw_us_per_batch"] = (time.perf_counter() - start) * 1e6

        if small is not None:
            report["loader_memory_kib"] = {
                f"{small.name} ({source_faces(small)} crops)": in_child(loader_memory, small,
                                                                        args.batches),
                f"{raw.name} ({n_crops} crops)": in_child(loader_memory, raw, args.batches),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_report(report)

if __name__ == "__main__":
    main()
