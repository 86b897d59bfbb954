"""Sync expert benchmark: training windows/s of the SyncNet expert, LSE scoring clips/s, and what a
GRIDTest-sized scoring (660 clips) would take; optionally a timed training run on real clips.

Synthetic talking faces (lipsync.experts.sync.synthetic) unless --train-set / --test-set name packed
splits (e.g. the real s1 split of config/grid-s1.yaml). With --seconds, training stops by SIGTERM
after that long (the loop saves a checkpoint), and the held-out accuracy and the LSE of the real
test clips against the identity copy are printed.

    .venv/bin/python benchmarks/syncnet.py                          # CPU, width 0.125 and 1.0
    .venv/bin/python benchmarks/syncnet.py --train-set results/datasets/small.h5 \
        --test-set results/datasets/test.h5 --width 0.25 --seconds 600
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from lipsync import checkpoint as ckpt  # noqa: E402
from lipsync.core.errors import TrainingError  # noqa: E402
from lipsync.experts.sync import synthetic  # noqa: E402
from lipsync.experts.sync import train as sync_train  # noqa: E402
from lipsync.metrics import score  # noqa: E402

GRID_TEST_CLIPS = 660  # 33 speakers x 20 clips


def training_options(width: float, batch: int, windows: int, device: str, workers: int,
                     validation_every: int) -> dict:
    return {"model": {"width": width},
            "training": {"batch_size": batch, "total_samples": windows, "learning_rate": 1e-3,
                         "validation_every_samples": validation_every,
                         "checkpoint_every_samples": max(validation_every, batch),
                         "log_every_samples": batch * 10, "num_workers": workers,
                         "progress_bar": False, "device": device}}


def time_training(train_set: Path, output: Path, options: dict, seconds: float | None) -> dict:
    """Train; with `seconds`, SIGTERM this process after that long (saved, then stopped)."""
    timer = None
    if seconds:
        timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
        timer.start()
    start = time.perf_counter()
    try:
        summary = sync_train.train_expert(train_set, output, options=options)
    except TrainingError as stopped:  # TrainingInterrupted: a checkpoint was saved
        print(f"  stopped: {stopped}")
        path = ckpt.latest_checkpoint(sync_train.run_folder(output) / "checkpoints")
        state = torch.load(path, weights_only=False)
        summary = {"samples": state["samples"], "checkpoint": str(path), "validation": None}
    finally:
        if timer is not None:
            timer.cancel()
    summary["seconds"] = time.perf_counter() - start
    return summary


def last_validation(output: Path) -> dict | None:
    log = sync_train.run_folder(output) / "log.jsonl"
    found = None
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "validation_accuracy" in record:
                found = record
    return found


def score_lse(expert: Path, test_set: Path, generated: dict[str, Path], folder: Path,
              device: str) -> dict:
    """Reference data once, then each generated set; seconds of each and the clip count."""
    options = {"metrics": ["lse"], "lse": {"expert": str(expert)}, "device": device,
               "bootstrap": {"resamples": 100}}
    start = time.perf_counter()
    score.write_reference("lse", test_set, folder / "lse.npz", options=options)  # timed alone
    out = {"reference_seconds": time.perf_counter() - start}
    for name, path in generated.items():
        start = time.perf_counter()
        # The reference data timed above, reused: only the scoring is timed here.
        summary = score.score_with_references(path, test_set, folder, folder / name,
                                              options=options, reuse_references=True)
        out[name] = {"seconds": time.perf_counter() - start, "clips": summary["n_clips"],
                     **{c: summary["metrics"]["lse"]["columns"][c]["value"]
                        for c in ("lse_d", "lse_c", "av_offset")},
                     "real_clips": summary["metrics"]["lse"]["extra"].get("real_clips")}
    return out


def generated_sets(test_set: Path, folder: Path) -> dict[str, Path]:
    """The real faces (upper bound) and the identity copy (each sample's reference frame)."""
    from helpers import write_generated

    with h5py.File(test_set, "r") as handle:
        faces = handle["faces"]
        crops, references = handle["samples/crop"][()], handle["samples/reference"][()]
        from lipsync.metrics.testset import read_faces

        real, identity = read_faces(faces, crops), read_faces(faces, references)
    paths = {"real": folder / "real.h5", "identity": folder / "identity.h5"}
    write_generated(paths["real"], real, model="real")
    write_generated(paths["identity"], identity, model="identity")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-set", type=Path, default=None)
    parser.add_argument("--test-set", type=Path, default=None)
    parser.add_argument("--width", type=float, nargs="+", default=[0.125, 1.0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="steps timed per width")
    parser.add_argument("--seconds", type=float, default=None,
                        help="train for this long instead (first width only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="syncnet-bench-"))
    train_set, test_set = args.train_set, args.test_set
    if train_set is None:
        train_set = work / "full.h5"
        start = time.perf_counter()
        synthetic.write_split(train_set, speakers=("s1", "s2"), clips_per_speaker=3)
        print(f"synthetic split: 6 clips in {time.perf_counter() - start:.1f} s")
    test_set = test_set or train_set
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch_size}")
    expert = None
    for k, width in enumerate(args.width):
        seconds = args.seconds if k == 0 else None
        windows = args.batch_size * (10**9 if seconds else args.steps)
        output = work / f"expert-{width}.pt"
        summary = time_training(train_set, output, training_options(
            width, args.batch_size, windows, args.device, args.workers,
            validation_every=args.batch_size * (200 if seconds else 10**6)), seconds)
        rate = summary["samples"] / summary["seconds"]
        print(f"width {width}: {summary['samples']} windows in {summary['seconds']:.1f} s = "
              f"{rate:.1f} windows/s (start-up included)")
        validation = last_validation(output) or {}
        if validation:
            print(f"  held-out accuracy {validation['validation_accuracy']:.3f} "
                  f"(in sync {validation['validation_in_sync_accuracy']:.3f}, off sync "
                  f"{validation['validation_off_sync_accuracy']:.3f}, "
                  f"{validation['validation_pairs']} pairs)")
        if expert is None:
            expert = output if output.exists() else Path(summary["checkpoint"])
    scores = score_lse(expert, test_set, generated_sets(test_set, work), work, args.device)
    clips = scores["real"]["clips"]
    per_run = scores["real"]["seconds"]
    print(f"LSE reference (audio embeddings + real clips): {scores['reference_seconds']:.1f} s "
          f"for {clips} clips = {clips / scores['reference_seconds']:.2f} clips/s")
    print(f"LSE scoring of one run (width-{args.width[0]} expert): {per_run:.1f} s = "
          f"{clips / per_run:.2f} clips/s")
    print(f"GRIDTest ({GRID_TEST_CLIPS} clips): reference "
          f"{scores['reference_seconds'] * GRID_TEST_CLIPS / clips / 60:.1f} min once, then "
          f"{per_run * GRID_TEST_CLIPS / clips / 60:.1f} min per run")
    if not args.seconds:
        print(f"(the expert trained {args.steps} steps only: the scores below exercise the "
              "plumbing; --seconds trains one worth reading)")
    for name in ("real", "identity"):
        s = scores[name]
        print(f"{name:>8}: LSE-D {s['lse_d']:.3f}  LSE-C {s['lse_c']:.3f}  "
              f"mean AV offset {s['av_offset']:.2f}")
    np.save(work / "scores.npy", np.array([json.dumps(scores, default=str)]))
    print(f"files in {work}")


if __name__ == "__main__":
    main()
