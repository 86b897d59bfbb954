"""Preprocessing cost at the paper's scale: per-clip time of faces, mels and pack on real s1 clips,
projected to 33 speakers x 1000 clips in CPU-hours and in SLURM wall time (speaker shards in
parallel, packing one job per split).

Runs the pipeline's own functions (what `lipsync faces`, `lipsync mels` and `lipsync pack` call) on
the first --clips clips of ../shared/grid-s1 (or $LIPSYNC_GRID_S1), one thread each, OpenCV's
detector (the S3FD weights cannot be fetched here: its network forward is timed apart with random
weights and added per frame for the paper's detector). With --keep, the packed raw file stays for
benchmarks/loader.py --dataset.

    .venv/bin/python benchmarks/preprocess.py --clips 12
    .venv/bin/python benchmarks/preprocess.py --clips 40 --keep /tmp/s1-full.h5
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsync.data import audio, faces, local, manifest, pack  # noqa: E402

PAPER_SPEAKERS, PAPER_CLIPS_PER_SPEAKER = 33, 1000
SHARD_SIZE = 250  # config.yaml data.shard_size: clips per faces/mels job
FRAMES_PER_CLIP = 75


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def s3fd_seconds_per_frame(frames: int = 16) -> float | None:
    """S3FD's network forward per 360x288 frame on one thread (random weights: the cost does not
    depend on them; box decoding and NMS are left out)."""
    try:
        from face_alignment.detection.sfd.net_s3fd import s3fd
    except ImportError:
        return None
    network = s3fd().eval()
    batch = torch.rand(frames, 3, 288, 360) * 255
    with torch.inference_mode():
        network(batch[:2])
        seconds, _ = timed(network, batch)
    return seconds / frames


def run_stages(entries, work: Path, layouts: tuple[str, ...]) -> dict:
    """Seconds of faces, mels and pack (each layout) over `entries`, after a one-clip warm-up
    of faces and mels (imports, the cascade, numba's JIT: once per job, not per clip)."""
    table, first = work / "s1.tsv", work / "first.tsv"
    manifest.write_manifest(table, entries)
    manifest.write_manifest(first, entries[:1])
    n = len(entries)
    face_options = {"faces": {"detector": "opencv"}, "video": {}}
    mel_options = {"audio": {}, "source": "track"}
    start_up = {}
    start_up["faces"], _ = timed(faces.extract_shard, first, 0, 1, work / "warm-faces.h5",
                                 work / "warm.tsv", options=face_options)
    start_up["mels"], _ = timed(audio.compute_shard, first, 0, 1, work / "warm-mels.h5",
                                options=mel_options)
    seconds = {}
    seconds["faces"], coverage = timed(faces.extract_shard, table, 0, n, work / "faces.h5",
                                       work / "coverage.tsv", options=face_options)
    seconds["mels"], _ = timed(audio.compute_shard, table, 0, n, work / "mels.h5",
                               options=mel_options)
    kept = coverage[coverage["status"] == "ok"]
    clips = work / "clips.tsv"
    pd.DataFrame({"speaker": "s1", "clip": kept["clip"]}).to_csv(clips, sep="\t", index=False)
    packed = {}
    for layout in layouts:
        packed[layout] = work / f"full-{layout}.h5"
        seconds[f"pack ({layout})"], _ = timed(
            pack.pack_split, "full", clips, [work / "faces.h5"], [work / "mels.h5"],
            packed[layout], options={"dataset": {"layout": layout}})
    return {"seconds": seconds, "start_up": start_up, "packed": packed,
            "clips_packed": len(kept)}


def print_projection(seconds: dict, n: int, s3fd: float | None, load: float) -> None:
    total_clips = PAPER_SPEAKERS * PAPER_CLIPS_PER_SPEAKER
    per_clip = {stage: s / n for stage, s in seconds.items()}
    if s3fd is not None:
        per_clip["faces with S3FD (+ network forward)"] = (per_clip["faces"]
                                                          + s3fd * FRAMES_PER_CLIP)
    print(f"\n{n} real s1 clips, 1 thread per stage, load average {load:.2f} (shared machine)")
    print(f"\n| stage | s per clip | CPU-hours for {PAPER_SPEAKERS} x {PAPER_CLIPS_PER_SPEAKER} "
          f"clips | SLURM wall time (h) |")
    print("|---|---:|---:|---:|")
    for stage, value in per_clip.items():
        hours = value * total_clips / 3600
        # faces and mels run one job per speaker shard, all in parallel; pack is one job per split
        parallel = stage.startswith(("faces", "mels"))
        wall = value * SHARD_SIZE / 3600 if parallel else hours
        print(f"| {stage} | {value:.3f} | {hours:.1f} | {wall:.2f} |")
    print(f"\nwall time assumes {total_clips // SHARD_SIZE} shard jobs of {SHARD_SIZE} clips "
          "running at once (data.shard_size) and GRIDFull's pack as one serial job")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--layouts", nargs="+", default=["raw", "jpeg"])
    parser.add_argument("--keep", type=Path, default=None, help="keep the packed raw file here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(os.environ.get("LIPSYNC_GRID_S1", REPO.parent / "shared" / "grid-s1"))
    entries = local.find_clips("s1", root)[:args.clips]
    if not entries:
        raise SystemExit(f"no s1 clips under {root}")
    work = Path(tempfile.mkdtemp(prefix="preprocess-bench-"))
    try:
        result = run_stages(entries, work, tuple(args.layouts))
        if args.keep is not None and "raw" in result["packed"]:
            shutil.copy(result["packed"]["raw"], args.keep)
        s3fd = s3fd_seconds_per_frame()
        print_projection(result["seconds"], len(entries), s3fd, os.getloadavg()[0])
        print("one-clip first job (imports, models, JIT; once per job): " + ", ".join(
            f"{stage} {value:.1f} s" for stage, value in result["start_up"].items()))
        sizes = {layout: path.stat().st_size for layout, path in result["packed"].items()}
        print("\npacked bytes per clip: " + ", ".join(
            f"{layout} {size / result['clips_packed'] / 1e6:.2f} MB" for layout, size
            in sizes.items()))
        if s3fd is not None:
            print(f"S3FD network forward: {s3fd * 1e3:.0f} ms per frame on one thread "
                  f"(random weights, {np.round(s3fd * FRAMES_PER_CLIP, 1)} s per clip)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
