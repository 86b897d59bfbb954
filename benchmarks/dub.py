"""Frames per second of `lipsync dub` per stage (decode, detect, generate, blend, encode), so the
slowest stage is visible; CPU by default, the GPU too when one is present.

Usage: python benchmarks/dub.py [--width 1.0] [--seconds 12] [--device cpu|cuda|all]
Input: ../shared/grid-samples/bbaf2n.mpg (or $LIPSYNC_GRID_SAMPLES) dubbed with brbk7n's audio;
the audio is repeated to --seconds so the per-frame stages outweigh start-up, and the 3 s face
video plays back and forth (ping-pong) to match. Generator: LipGAN with random weights at
--width (1.0 is the published size; speed does not depend on the weights).
Baseline, measured in the same run: the identity copy (no network), which isolates what the
generator costs; each stage's frames/s counts output frames.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from lipsync import dub
from lipsync.data import decode
from lipsync.media import write_video

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("LIPSYNC_GRID_SAMPLES", REPO.parent / "shared" / "grid-samples"))
STAGES = ("decode", "detect", "generate", "blend", "encode")


def make_generator(path: Path, width: float) -> Path:
    from lipsync.models import registry
    from lipsync.train import export_generator

    options = registry.resolve_options("lipgan", {"width": width})
    export_generator(path, registry.build("lipgan", options).generator, "lipgan", options, {}, 0, 0)
    return path


def long_audio(folder: Path, seconds: float) -> Path:
    """brbk7n's track repeated to `seconds`, as a WAV-free AAC file the dub decodes like any."""
    audio = decode.read_audio(SAMPLES / "brbk7n.mpg", 44100)
    repeats = int(np.ceil(seconds * 44100 / len(audio)))
    audio = np.tile(audio, repeats)[:int(seconds * 44100)]
    path = folder / "speech.mp4"
    # A one-frame video track carries it (lipsync.media writes video with optional audio).
    write_video(path, np.zeros((1, 16, 16, 3), np.uint8), 1, audio, 44100)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or all (cpu and cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if not (SAMPLES / "bbaf2n.mpg").exists():
        raise SystemExit(f"GRID sample clips not found in {SAMPLES}")
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generator = make_generator(folder / "generator.pt", args.width)
        audio = long_audio(folder, args.seconds)
        # Warm-up (library imports, the mel filter bank, the detector's cascade): not measured.
        dub.dub("identity", SAMPLES / "bbaf2n.mpg", SAMPLES / "brbk7n.mpg", folder / "warm.mp4")
        rows = []
        for device in devices:
            for name, source in (("identity", "identity"), (f"lipgan w{args.width:g}", generator)):
                record = dub.dub(source, SAMPLES / "bbaf2n.mpg", audio, folder / "out.mp4",
                                 options={"dub": {"device": device}})
                rows.append((device, name, record))
        print(f"{rows[0][2]['frames']} output frames of {rows[0][2]['encode']['width']}x"
              f"{rows[0][2]['encode']['height']} at {rows[0][2]['fps']:g} fps, "
              f"codec {rows[0][2]['encode']['codec']}, torch threads {args.threads}")
        print(f"{'device':6} {'generator':14} " + " ".join(f"{s:>9}" for s in STAGES)
              + f" {'total':>9}  slowest (frames/s)")
        for device, name, record in rows:
            rates = record["timings"]["frames_per_second"]
            total = record["frames"] / record["timings"]["total_seconds"]
            slowest = min(STAGES, key=lambda s: rates.get(s) or float("inf"))
            print(f"{device:6} {name:14} " + " ".join(f"{rates.get(s) or 0:9.1f}" for s in STAGES)
                  + f" {total:9.1f}  {slowest}")
        identity = {d: r for d, n, r in rows if n == "identity"}
        for device, name, record in rows:
            if name != "identity":
                base = identity[device]["timings"]["total_seconds"]
                print(f"{device}: {name} takes {record['timings']['total_seconds'] / base:.2f}x "
                      "the identity copy's time")
        print(json.dumps({f"{d}/{n}": r["timings"]["frames_per_second"] for d, n, r in rows}))


if __name__ == "__main__":
    main()
