"""Frames per second of `lipsync dub` per stage on a GRID clip, and its peak memory (RSS) against
the video's length on synthesized HD footage, each case in its own process so its peak is its own.

Usage: python benchmarks/dub.py [--full] [--width 1.0] [--seconds 12] [--device cpu|cuda|all]
                                [--threads 1] [--hd-generator identity|lipgan]

Stages (always): ../shared/grid-samples/bbaf2n.mpg (or $LIPSYNC_GRID_SAMPLES, 360x288) dubbed
with brbk7n's audio repeated to --seconds; the 3 s face video plays back and forth (ping-pong).
Generators: the identity copy (no network; isolates what the generator costs) and LipGAN with
random weights at --width (1.0 is the published size; speed does not depend on the weights).

Memory: the same face (bbaf2n's frames scaled to the frame's height, centred on grey), as long as
the audio, dubbed by the identity copy (--hd-generator lipgan for LipGAN at --width). Quick
default: 720p at 5 and 10 s. --full: 720p and 1080p at 10, 30 and 60 s. The HD cases detect on
every 5th frame (faces.detect_every 5): OpenCV's cascade on every 1080p frame would make the
full set take an hour on 2 cores, and detection holds no frames beyond its chunk either way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("LIPSYNC_GRID_SAMPLES", REPO.parent / "shared" / "grid-samples"))
STAGES = ("decode", "detect", "generate", "blend", "encode")
HD_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
HD_FACES = {"detect_every": 5}


def make_generator(path: Path, width: float) -> Path:
    from lipsync.models import registry
    from lipsync.training.loop import export_generator

    options = registry.resolve_options("lipgan", {"width": width})
    export_generator(path, registry.build("lipgan", options).generator, "lipgan", options, {}, 0, 0)
    return path


def long_audio(folder: Path, seconds: float) -> Path:
    """brbk7n's track repeated to `seconds`, in an MP4 the dub decodes like any audio."""
    from lipsync.data import decode
    from lipsync.tools.media import write_video

    audio = decode.read_audio(SAMPLES / "brbk7n.mpg", 44100)
    audio = np.tile(audio, int(np.ceil(seconds * 44100 / len(audio))))[:int(seconds * 44100)]
    path = folder / f"speech-{seconds:g}s.mp4"
    # A one-frame video track carries it (lipsync.tools.media writes video with optional audio).
    write_video(path, np.zeros((1, 16, 16, 3), np.uint8), 1, audio, 44100)
    return path


def hd_face(folder: Path, size: str, seconds: float) -> Path:
    """bbaf2n's face scaled into a `size` frame, ping-ponged to `seconds` at 25 fps."""
    from lipsync.data import decode
    from lipsync.tools.dub import pingpong
    from lipsync.tools.media import write_video

    width, height = HD_SIZES[size]
    frames, fps = decode.read_video(SAMPLES / "bbaf2n.mpg")
    scaled_width = round(frames.shape[2] * height / frames.shape[1])
    left = (width - scaled_width) // 2

    def frame(k: int) -> np.ndarray:
        canvas = np.full((height, width, 3), 120, np.uint8)
        canvas[:, left:left + scaled_width] = cv2.resize(frames[k], (scaled_width, height),
                                                         interpolation=cv2.INTER_CUBIC)
        return canvas

    path = folder / f"face-{size}-{seconds:g}s.mp4"
    shown = pingpong(int(round(seconds * fps)), len(frames))
    write_video(path, (frame(k) for k in shown), fps, None, 44100,
                options={"preset": "ultrafast", "crf": 23})
    return path


def run_case(face: str, audio: str, generator: str, options: str, threads: int) -> None:
    """Child process: one dub, then its record's figures and this process's peak RSS as JSON."""
    import torch

    from lipsync.tools import dub

    torch.set_num_threads(threads)
    # Warm-up, not measured: librosa's lazy import inside the first mel spectrogram (seconds on a
    # loaded machine), as a long-running process would have paid it already.
    from lipsync.data.audio import AUDIO_DEFAULTS, melspectrogram

    melspectrogram(np.zeros(16000, np.float32), AUDIO_DEFAULTS)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        record = dub.dub(generator, face, audio, Path(tmp) / "out.mp4",
                         options=json.loads(options))
        seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"frames": record["frames"], "seconds": seconds,
                      "width": record["encode"]["width"], "height": record["encode"]["height"],
                      "peak_rss_mb": peak_kib / 1024,
                      "rates": record["timings"]["frames_per_second"]}))


def child(face: Path, audio: Path, generator: str, options: dict, threads: int) -> dict:
    command = [sys.executable, __file__, "--case", str(face), str(audio), generator,
               json.dumps(options), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode:
        raise SystemExit(f"case failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_table(folder: Path, args, generator: Path) -> None:
    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    audio = long_audio(folder, args.seconds)
    rows = [(device, name, child(SAMPLES / "bbaf2n.mpg", audio, source, {"dub": {"device": device}},
                                 args.threads))
            for device in devices
            for name, source in (("identity", "identity"), (f"lipgan w{args.width:g}", generator))]
    first = rows[0][2]
    print(f"{first['frames']} output frames of {first['width']}x{first['height']} at 25 fps, "
          f"torch threads {args.threads}")
    print(f"{'device':6} {'generator':14} " + " ".join(f"{s:>9}" for s in STAGES)
          + f" {'total':>9} {'peak RSS':>9}")
    for device, name, result in rows:
        rates = result["rates"]
        print(f"{device:6} {name:14} " + " ".join(f"{rates.get(s) or 0:9.1f}" for s in STAGES)
              + f" {result['frames'] / result['seconds']:9.1f} {result['peak_rss_mb']:6.0f} MB")


def memory_table(folder: Path, args, generator: Path) -> None:
    cases = ([(size, s) for size in HD_SIZES for s in (10, 30, 60)] if args.full
             else [("720p", 5), ("720p", 10)])
    source = "identity" if args.hd_generator == "identity" else str(generator)
    print(f"\nHD footage, generator {args.hd_generator}, faces.detect_every "
          f"{HD_FACES['detect_every']}, torch threads {args.threads}")
    print(f"{'size':6} {'seconds':>7} {'frames':>7} {'frames/s':>9} {'peak RSS':>9}")
    for size, seconds in cases:
        face, audio = hd_face(folder, size, seconds), long_audio(folder, seconds)
        result = child(face, audio, source, {"faces": HD_FACES}, args.threads)
        print(f"{size:6} {seconds:7g} {result['frames']:7d} "
              f"{result['frames'] / result['seconds']:9.1f} {result['peak_rss_mb']:6.0f} MB",
              flush=True)
        face.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="720p and 1080p at 10, 30, 60 s")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or all (cpu and cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--hd-generator", default="identity", choices=("identity", "lipgan"))
    parser.add_argument("--skip-stages", action="store_true", help="only the memory table")
    parser.add_argument("--skip-memory", action="store_true", help="only the stage table")
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(*args.case, threads=args.threads)
        return
    if not (SAMPLES / "bbaf2n.mpg").exists():
        raise SystemExit(f"GRID sample clips not found in {SAMPLES}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine: "
          "figures drop with the load)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generator = make_generator(folder / "generator.pt", args.width)
        if not args.skip_stages:
            stage_table(folder, args, generator)
        if not args.skip_memory:
            memory_table(folder, args, generator)


if __name__ == "__main__":
    main()
