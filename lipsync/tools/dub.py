"""`lipsync dub`: any face video or photo plus any audio in, a lip-synced video out.

Phases: prepare (every option, path and the output checked before any decode; an output that is
an input is refused), the audio (16 kHz for the mels, the muxing rate for the track), track (a
first pass over the face video in chunks: detector and tracker, only the boxes kept), then a
second pass in chunks of `dub.batch_size` frames: crop, generate (96x96, LipGAN's input: the
frame's own face as reference ++ that face with its lower half masked), blend (the generated lower
half resized into the face box under a feathered mask) and encode (lipsync.tools.media). Memory is
bounded by the chunk, not the video's length (lipsync.data.stream).

Timing: the output keeps the face video's frame rate (a photo gets `dub.still_fps`); output frame
k shows source frame pingpong(k) and hears the mel window centred on its time k / fps, so any frame
rate maps to mel steps by time. The output has round(audio seconds x fps) frames.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import refuse_overwriting, same_file, write_json
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults, resolve
from lipsync.core.progress import progress
from lipsync.core.provenance import describe
from lipsync.data import decode, detectors, stream
from lipsync.data import faces as face_tracks
from lipsync.data import samples as sample_rules
from lipsync.data.audio import AUDIO_OPTIONS, melspectrogram
from lipsync.tools.media import ENCODE_OPTIONS, container_format, resolve_encode, write_video

log = get_logger(__name__)

# Config section `dub` (without `pairs`, which only the workflow reads), checked before any decode.
DUB_OPTIONS = {
    "batch_size": Option(32, int, "faces per forward pass: memory, not results, depends on it",
                         minimum=1),
    "device": Option("auto", str, "torch device: auto (cuda when present), cpu, cuda, cuda:N"),
    "still_fps": Option(25, float, "frame rate of the output for a photo (GRID's, the models' "
                        "training rate)", above=0, maximum=240),
    # Wide enough that the seam between generated and original pixels falls inside a gradient,
    # not on an edge.
    "feather": Option(0.15, float, "width of the blend mask's ramps as a fraction of the face "
                      "box", minimum=0, maximum=1),
    "encode": ENCODE_OPTIONS,
}
DUB_DEFAULTS = defaults(DUB_OPTIONS)
# The model hears 0.2 s mel windows; audio under half a second makes a dozen frames at 25 fps,
# too short to show speech, so the output is made but flagged.
MIN_AUDIO_SECONDS = 0.5
# Peak amplitude below -60 dBFS: the track holds no audible sound, the mouth will not move.
SILENT_PEAK = 1e-3
BLEND_METHOD = ("generated 96x96 face resized into the face box (bicubic); the lower half "
                "(from 0.5 - feather/2 of the box height down) replaces the frame under a mask "
                "that ramps linearly from 0 to 1 over `feather` of the box at the mid-line, the "
                "sides and the chin, so the box's own edges keep the original pixels")
FRAME_MAPPING = ("output at the face video's fps (dub.still_fps for a photo); output frame k "
                 "shows source frame pingpong(k) and the mel window centred on time k / fps")


@dataclass
class Timer:
    """Seconds spent per stage."""

    seconds: dict

    def __init__(self):
        self.seconds = {}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now

    def summary(self, n_frames: int, total: float) -> dict:
        """Seconds and output frames per second of each stage, and the total seconds."""
        rates = {stage: (n_frames / s if s > 0 else None) for stage, s in self.seconds.items()}
        return {"seconds": self.seconds, "total_seconds": total, "frames_per_second": rates}


def check_device(text: str, where: str):
    """`text` as a torch.device that exists on this machine, or a LipsyncError naming `where`."""
    import torch

    from lipsync.core.device import pick_device

    try:
        device = pick_device(text)
    except RuntimeError as error:
        raise LipsyncError(f"{where}: {text!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LipsyncError(f"{where}: {text!r}: this machine has no CUDA device; use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise LipsyncError(f"{where}: {text!r}: this machine has {torch.cuda.device_count()} "
                           "CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise LipsyncError(f"{where}: {text!r}: dub runs on cpu or cuda")
    return device


def check_faces(faces: dict | None) -> dict:
    """The faces section with defaults, checked by its table (lipsync.data.faces)."""
    return resolve(face_tracks.FACES_OPTIONS, faces, "faces")


def resolve_options(options: dict | None) -> dict:
    """{"faces", "audio", "dub"} sections with every default filled in, every dub option checked
    (unknown keys, types, ranges, the device and codecs this machine has) before any work."""
    options = options or {}
    unknown = sorted(set(options) - {"faces", "audio", "dub"})
    if unknown:
        raise LipsyncError(f"unknown dub option section(s) {', '.join(unknown)}; "
                           "known: audio, dub, faces")
    dub = dict(options.get("dub") or {})
    dub.pop("pairs", None)  # the workflow's list of jobs, not an option of one job
    dub = resolve(DUB_OPTIONS, dub, "dub")
    dub["encode"] = resolve_encode(dub["encode"], "dub.encode")
    check_device(dub["device"], "dub.device")
    faces = check_faces(options.get("faces"))
    audio = resolve(AUDIO_OPTIONS, options.get("audio"), "audio")
    return {"faces": faces, "audio": audio, "dub": dub}


def pingpong(n_output: int, n_source: int) -> np.ndarray:
    """Source frame of each output frame: 0, 1, .., n-1, n-2, .., 1, 0, 1, .. (cut when longer)."""
    if n_source <= 1:
        return np.zeros(n_output, dtype=np.int64)
    period = 2 * (n_source - 1)
    phase = np.arange(n_output, dtype=np.int64) % period
    return np.where(phase < n_source, phase, period - phase)


def mel_window_starts(n_mel_steps: int, n_frames: int, fps: float, audio: dict,
                      mel_window: int) -> np.ndarray:
    """First mel step of the window centred on each output frame's time.

    Windows reaching past either end of the audio are shifted inside it (as LipGAN's inference
    does at the end), so every frame gets real audio.
    """
    steps = sample_rules.mel_steps_per_frame(int(audio["sample_rate"]), int(audio["hop_length"]),
                                             fps)
    starts = sample_rules.mel_window_starts(np.arange(n_frames), steps_per_frame=steps,
                                            mel_window=mel_window, alignment="centered",
                                            edge_frames=0)
    return np.clip(starts, 0, max(n_mel_steps, mel_window) - mel_window)


def padded_mel(mel: np.ndarray, mel_window: int) -> np.ndarray:
    """`mel`, padded with its quietest value when the audio is shorter than one window."""
    if mel.shape[1] >= mel_window:
        return mel
    return np.pad(mel, ((0, 0), (0, mel_window - mel.shape[1])), constant_values=mel.min())


def mel_windows(mel: np.ndarray, n_frames: int, fps: float, audio: dict, mel_window: int
                ) -> np.ndarray:
    """The mel window (n_frames x n_mels x mel_window) centred on each output frame's time."""
    starts = mel_window_starts(mel.shape[1], n_frames, fps, audio, mel_window)
    mel = padded_mel(mel, mel_window)
    return np.stack([mel[:, s:s + mel_window] for s in starts])


def blend_mask(size: int, feather: float) -> np.ndarray:
    """float32 size x size weights of the generated face: the lower half, ramped at its borders."""
    ramp = max(feather * size, 1.0)
    coords = np.arange(size, dtype=np.float32) + 0.5
    top = np.clip((coords - (0.5 * size - ramp / 2)) / ramp, 0, 1)
    bottom = np.clip((size - coords) / ramp, 0, 1)
    sides = np.clip(np.minimum(coords, size - coords) / ramp, 0, 1)
    return (top * bottom)[:, None] * sides[None, :]


def paste_face(frame: np.ndarray, face: np.ndarray, box: np.ndarray, feather: float) -> np.ndarray:
    """`frame` with `face` (S x S x 3) resized into `box` and blended by `blend_mask`."""
    height, width = frame.shape[:2]
    # The same whole-pixel box as crop_faces cut, so the face lands where it was taken from.
    x0, y0 = int(np.clip(round(box[0]), 0, width - 1)), int(np.clip(round(box[1]), 0, height - 1))
    x1, y1 = max(x0 + 1, int(round(box[2]))), max(y0 + 1, int(round(box[3])))
    x1, y1 = min(x1, width), min(y1, height)
    size = (x1 - x0, y1 - y0)
    resized = cv2.resize(face, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    mask = cv2.resize(blend_mask(face.shape[0], feather), size,
                      interpolation=cv2.INTER_LINEAR)[..., None]
    out = frame.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(mask * resized + (1 - mask) * region), 0, 255
                                ).astype(np.uint8)
    return out


def _load(generator: str, device):
    """(model or None for identity, model name, model options, input shape)."""
    from lipsync.models import registry

    if str(generator) == "identity":
        return None, "identity", {}, registry.input_shape("lipgan")
    from lipsync.training.checkpoint import load_generator

    model, info = load_generator(generator, device)
    return model, info["model"], info["model_options"], registry.input_shape(info["model"])


def generate_faces(model, crops: np.ndarray, crop_of_frame: np.ndarray, mels: np.ndarray, *,
                   batch_size: int, device) -> np.ndarray:
    """uint8 faces (len(crop_of_frame) x S x S x 3): the model's output for each output frame.

    The input is LipGAN's at inference: the frame's own face as the reference, ++ the same face
    with its lower half masked (lipsync.data.dataset.mask_lower_half); `model` None is the
    identity copy, which returns the reference unchanged.
    """
    if model is None:
        return crops[crop_of_frame]
    import torch

    from lipsync.data.dataset import mask_lower_half

    out = np.empty((len(crop_of_frame), *crops.shape[1:]), dtype=np.uint8)
    with torch.no_grad():
        for start in range(0, len(crop_of_frame), batch_size):
            stop = min(start + batch_size, len(crop_of_frame))
            faces = torch.from_numpy(crops[crop_of_frame[start:stop]]).to(device)
            reference = faces.permute(0, 3, 1, 2).float().div_(255.0)
            face_input = torch.cat([reference, mask_lower_half(reference)], dim=1)
            mel = torch.from_numpy(np.ascontiguousarray(mels[start:stop])[:, None]).to(device)
            fake = model(face_input, mel)
            images = torch.round(fake.float().clamp(0, 1) * 255).to(torch.uint8)
            out[start:stop] = images.permute(0, 2, 3, 1).cpu().numpy()
    return out


def media_path(text: str | os.PathLike, *, audio: bool = False) -> Path:
    """A media file named directly, or `MANIFEST.tsv:N`: clip N (0-based, in clip order) of a
    corpus manifest, its video (for `audio`, its audio file, else the video's own track).

    The workflow names demo inputs this way: the synthetic corpus's clip names are only known
    once its manifest exists.
    """
    match = re.fullmatch(r"(.+\.tsv):(\d+)", str(text))
    if match is None:
        return Path(text)
    from lipsync.data.manifest import read_manifest

    entries = read_manifest(match.group(1))
    index = int(match.group(2))
    if index >= len(entries):
        raise InputError(match.group(1), f"has {len(entries)} clips, no clip {index}")
    entry = entries[index]
    return Path(entry.audio if audio and entry.audio else entry.video)



@dataclass
class Job:
    """One dub's checked inputs: everything is known to be usable before any decode."""

    generator: str
    face: Path
    audio: Path
    output: Path
    sidecar: Path
    options: dict
    device: object


def prepare(generator: str | os.PathLike, face: str | os.PathLike, audio: str | os.PathLike,
            output: str | os.PathLike, options: dict | None,
            sidecar: str | os.PathLike | None) -> Job:
    """Check options, paths and the output's container; refuse an output that is an input."""
    resolved = resolve_options(options)
    face, audio, output = media_path(face), media_path(audio, audio=True), Path(output)
    sidecar = Path(sidecar) if sidecar is not None else output.with_suffix(".json")
    container_format(output)
    inputs = {"--face": face, "--audio": audio}
    if str(generator) != "identity":
        inputs["--generator"] = Path(generator)
    for role, path in inputs.items():
        if not path.is_file():
            raise InputError(path, f"{role}: " + ("not a regular file" if path.exists()
                                                 else "file does not exist"))
    refuse_overwriting({"--output": output, "--sidecar": sidecar}, inputs)
    if same_file(output, sidecar):
        raise LipsyncError(f"--sidecar {sidecar} is the --output video itself")
    return Job(str(generator), face, audio, output, sidecar, resolved,
               check_device(resolved["dub"]["device"], "dub.device"))


@dataclass
class Sound:
    """The audio: 16 kHz samples for the mels, the muxing rate's for the output's track."""

    seconds: float
    mel: np.ndarray
    track: np.ndarray
    track_rate: int


def read_sound(job: Job) -> Sound:
    audio = job.options["audio"]
    track_rate = int(job.options["dub"]["encode"]["audio_sample_rate"])
    wav = decode.read_audio(job.audio, int(audio["sample_rate"]))
    if not np.isfinite(wav).all() or len(wav) < 2:
        raise InputError(job.audio, "audio holds no usable samples")
    return Sound(len(wav) / int(audio["sample_rate"]), melspectrogram(wav, audio),
                 decode.read_audio(job.audio, track_rate), track_rate)


def input_warnings(job: Job, sound: Sound, video: stream.VideoTrack) -> list[str]:
    """What the output will not show well, logged and kept in the JSON record."""
    warnings = []
    if sound.seconds < MIN_AUDIO_SECONDS:
        warnings.append(f"{job.audio}: the audio lasts {sound.seconds:.3f} s (under "
                        f"{MIN_AUDIO_SECONDS} s): too short to show speech")
    peak = float(np.abs(sound.track).max()) if len(sound.track) else 0.0
    if peak < SILENT_PEAK:
        warnings.append(f"{job.audio}: the audio is silent (peak amplitude {peak:.1e}, under "
                        f"{SILENT_PEAK:g}): the mouth will not follow speech")
    encode = job.options["dub"]["encode"]
    if (video.height % 2 or video.width % 2) and not encode["lossless"]:
        warnings.append(f"{job.face}: frames are {video.width}x{video.height}; yuv420p needs even "
                        f"sizes, so the output is {video.width + video.width % 2}x"
                        f"{video.height + video.height % 2} (edge row/column repeated)")
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def track_face(job: Job) -> tuple[stream.VideoTrack, float, bool]:
    """The face video's track (first pass), its output frame rate and whether it is a photo."""
    faces = job.options["faces"]
    video = stream.track_video(job.face, detectors.build(faces), faces)
    if video.track is None:
        raise InputError(job.face, f"no face found in any of its {video.frames} frames "
                                   f"(detector {faces['detector']})")
    still = video.frames == 1
    fps = float(job.options["dub"]["still_fps"]) if still or not video.fps else video.fps
    return video, fps, still


@dataclass
class Plan:
    """Which source frame and mel window each output frame gets."""

    source_of_frame: np.ndarray
    mel_starts: np.ndarray
    mel: np.ndarray
    mel_window: int
    image_size: int


def dubbed_frames(job: Job, model, video: stream.VideoTrack, plan: Plan, timer: Timer):
    """Output frames in order, made chunk by chunk (batch_size frames) as the encoder asks."""
    dub_options = job.options["dub"]
    batch_size, feather = int(dub_options["batch_size"]), float(dub_options["feather"])
    boxes, has_face = video.track.boxes, np.asarray(video.track.detected, bool)
    frames = stream.frames_in_order(job.face, plan.source_of_frame)
    bar = progress(total=len(plan.source_of_frame), unit="frame", desc="dub")
    for start in range(0, len(plan.source_of_frame), batch_size):
        since = time.perf_counter()
        sources = plan.source_of_frame[start:start + batch_size]
        chunk = [next(frames) for _ in sources]
        since = timer.add("decode", since)
        with_face = np.flatnonzero(has_face[sources])
        if len(with_face):
            # Frame by frame: stacking the chunk's frames for one call would copy them all.
            crops = np.stack([face_tracks.crop_faces(chunk[i][None], boxes[sources[i]][None],
                                                     plan.image_size)[0] for i in with_face])
            since = timer.add("detect", since)
            mels = np.stack([plan.mel[:, s:s + plan.mel_window]
                             for s in plan.mel_starts[start:start + batch_size][with_face]])
            generated = generate_faces(model, crops, np.arange(len(crops)), mels,
                                       batch_size=batch_size, device=job.device)
            since = timer.add("generate", since)
            for row, i in enumerate(with_face):
                chunk[i] = paste_face(chunk[i], generated[row], boxes[sources[i]], feather)
            timer.add("blend", since)
        yield from chunk
        bar.update(len(chunk))
    bar.close()
    frames.close()


def _coverage(has_face: np.ndarray, dubbed: int, n_output: int, rejected: int) -> dict:
    return {"source_frames_with_face": int(has_face.sum()), "output_frames_dubbed": int(dubbed),
            "output_frames_passed_through": int(n_output - dubbed),
            "fraction_dubbed": dubbed / n_output, "boxes_rejected": int(rejected)}


def dub(generator: str | os.PathLike, face: str | os.PathLike, audio: str | os.PathLike,
        output: str | os.PathLike, *, options: dict | None = None,
        sidecar: str | os.PathLike | None = None) -> dict:
    """Dub `face` (video or photo) with `audio` through `generator` (a generator file or
    "identity") into `output` (MP4 unless the suffix says .mov/.mkv) plus a JSON sidecar
    (default: `output` with suffix .json). Returns the sidecar's record.

    `options` = {"faces": faces section, "audio": audio section, "dub": dub section}; missing keys
    take the pipeline's defaults. Options, paths and the output (never one of the inputs) are
    checked before any decode. The face video is read twice in bounded chunks (track, then dub),
    so memory does not grow with its length. Frames without a face are passed through unchanged
    and counted; a face video without a face in any frame, or audio that cannot be decoded, is an
    InputError, and no output file is written.
    """
    job = prepare(generator, face, audio, output, options, sidecar)
    timer, started = Timer(), time.perf_counter()
    model, model_name, model_options, shape = _load(job.generator, job.device)
    since = timer.add("load", started)
    sound = read_sound(job)
    since = timer.add("decode", since)
    video, fps, still = track_face(job)
    timer.add("detect", since)
    warnings = input_warnings(job, sound, video)

    n_output = max(1, int(round(sound.seconds * fps)))
    mel_window = int(shape["mel_window"])
    plan = Plan(pingpong(n_output, video.frames),
                mel_window_starts(sound.mel.shape[1], n_output, fps, job.options["audio"],
                                  mel_window),
                padded_mel(sound.mel, mel_window), mel_window, int(shape["image_size"]))
    before, since = sum(timer.seconds.values()), time.perf_counter()
    written = write_video(job.output, dubbed_frames(job, model, video, plan, timer), fps,
                          sound.track, sound.track_rate, options=job.options["dub"]["encode"])
    timer.seconds["encode"] = time.perf_counter() - since - (sum(timer.seconds.values()) - before)
    record = _record(job, model_name, model_options, video, plan, fps, still, sound, written)
    record.update(warnings=warnings,
                  timings=timer.summary(n_output, time.perf_counter() - started))
    write_json(job.sidecar, record)
    log.info("dubbed %s with %s -> %s (%d frames, %d passed through, %.1f s)", job.face,
             job.audio, job.output, n_output, record["coverage"]["output_frames_passed_through"],
             record["timings"]["total_seconds"])
    return record


def _record(job: Job, model_name: str, model_options: dict, video: stream.VideoTrack, plan: Plan,
            fps: float, still: bool, sound: Sound, written: dict) -> dict:
    has_face = np.asarray(video.track.detected, bool)
    n_output = len(plan.source_of_frame)
    dubbed = int(has_face[plan.source_of_frame].sum())
    if dubbed < n_output:
        log.warning("%s: %d of %d output frames have no face and pass through unchanged",
                    job.face, n_output - dubbed, n_output)
    return {
        "generator": job.generator, "model": model_name, "model_options": model_options,
        "face": str(job.face), "audio": str(job.audio), "output": str(job.output),
        "still": still, "fps": fps, "frames": n_output, "source_frames": video.frames,
        "audio_seconds": sound.seconds, "frame_mapping": FRAME_MAPPING, "blend": BLEND_METHOD,
        "coverage": _coverage(has_face, dubbed, n_output, video.track.rejected),
        "encode": written, "device": str(job.device), "options": job.options,
        "provenance": describe(),
    }


def write_strip(face: str | os.PathLike, dubbed: str | os.PathLike, output: str | os.PathLike,
                *, frames: int = 4, height: int = 144, still_fps: float = 25) -> None:
    """PNG of `frames` evenly spaced moments: the face input (top row) above the dubbed video."""
    from lipsync.data.sheets import contact_sheet

    made = decode.count_video_frames(dubbed)[0]
    source = decode.count_video_frames(media_path(face))[0]
    picks = np.unique(np.linspace(0, made - 1, min(frames, made)).round().astype(int))
    # The source frame each output frame showed (the same ping-pong as `dub`).
    shown = pingpong(made, source)[picks]

    def small(image: np.ndarray) -> np.ndarray:
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

    top = [small(f) for f in stream.frames_in_order(media_path(face), shown)]
    contact_sheet([top, [small(f) for f in stream.frames_in_order(dubbed, picks)]], output)
