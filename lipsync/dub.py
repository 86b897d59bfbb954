"""`lipsync dub`: any face video or photo plus any audio in, a lip-synced video out.

Stages: decode (face frames, and the audio at 16 kHz for the mels and at the muxing rate), detect
(the pipeline's detector and tracker), generate (batched, 96x96, LipGAN's input: the frame's own
face as reference ++ that face with its lower half masked), blend (the generated lower half
resized into the face box under a feathered mask) and encode (lipsync.media).

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

from lipsync.data import decode, detectors
from lipsync.data import faces as face_tracks
from lipsync.data import samples as sample_rules
from lipsync.data.audio import AUDIO_DEFAULTS, melspectrogram
from lipsync.errors import InputError, LipsyncError
from lipsync.io import write_json
from lipsync.logs import get_logger
from lipsync.media import ENCODE_DEFAULTS, write_video
from lipsync.progress import progress
from lipsync.provenance import describe

log = get_logger(__name__)

# Config section `dub` (without `pairs`, which only the workflow reads); the schema repeats these.
DUB_DEFAULTS = {
    "batch_size": 32,  # faces per forward pass: memory, not results, depends on it
    "device": "auto",  # cuda when present
    "still_fps": 25,  # frame rate of the output for a photo (GRID's, the models' training rate)
    # Width of the blend mask's ramps as a fraction of the face box: wide enough that the seam
    # between generated and original pixels falls inside a gradient, not on an edge.
    "feather": 0.15,
    "encode": dict(ENCODE_DEFAULTS),
}
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


def resolve_options(options: dict | None) -> dict:
    """{"faces", "audio", "dub"} sections with every default filled in; unknown dub keys refused."""
    options = options or {}
    unknown = sorted(set(options) - {"faces", "audio", "dub"})
    if unknown:
        raise LipsyncError(f"unknown dub option section(s) {', '.join(unknown)}; "
                           "known: audio, dub, faces")
    dub = dict(options.get("dub") or {})
    dub.pop("pairs", None)  # the workflow's list of jobs, not an option of one job
    bad = sorted(set(dub) - set(DUB_DEFAULTS))
    bad += [f"encode.{k}" for k in sorted(set(dub.get("encode") or {}) - set(ENCODE_DEFAULTS))]
    if bad:
        raise LipsyncError(f"dub has no option(s) {', '.join(bad)}; "
                           f"known: {', '.join(sorted(DUB_DEFAULTS))}")
    dub = {**DUB_DEFAULTS, **dub, "encode": {**ENCODE_DEFAULTS, **(dub.get("encode") or {})}}
    faces = face_tracks._merged(face_tracks.FACES_DEFAULTS, options.get("faces"))
    audio = {**AUDIO_DEFAULTS, **(options.get("audio") or {})}
    return {"faces": faces, "audio": audio, "dub": dub}


def pingpong(n_output: int, n_source: int) -> np.ndarray:
    """Source frame of each output frame: 0, 1, .., n-1, n-2, .., 1, 0, 1, .. (cut when longer)."""
    if n_source <= 1:
        return np.zeros(n_output, dtype=np.int64)
    period = 2 * (n_source - 1)
    phase = np.arange(n_output, dtype=np.int64) % period
    return np.where(phase < n_source, phase, period - phase)


def mel_windows(mel: np.ndarray, n_frames: int, fps: float, audio: dict, mel_window: int
                ) -> np.ndarray:
    """The mel window (n_frames x n_mels x mel_window) centred on each output frame's time.

    Windows reaching past either end of the audio are shifted inside it (as LipGAN's inference
    does at the end), so every frame gets real audio.
    """
    if mel.shape[1] < mel_window:  # audio shorter than one window: pad with its quietest value
        mel = np.pad(mel, ((0, 0), (0, mel_window - mel.shape[1])), constant_values=mel.min())
    steps = sample_rules.mel_steps_per_frame(int(audio["sample_rate"]), int(audio["hop_length"]),
                                             fps)
    starts = sample_rules.mel_window_starts(np.arange(n_frames), steps_per_frame=steps,
                                            mel_window=mel_window, alignment="centered",
                                            edge_frames=0)
    starts = np.clip(starts, 0, mel.shape[1] - mel_window)
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
    from lipsync.checkpoint import load_generator

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
    bar = progress(total=len(crop_of_frame), unit="frame", desc="dub generate")
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
            bar.update(stop - start)
    bar.close()
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


def _read_face(face: str | os.PathLike, still_fps: float) -> tuple[np.ndarray, float, bool]:
    frames, fps = decode.read_video(face)
    still = len(frames) == 1
    return frames, (float(still_fps) if still or not fps else fps), still


def _read_audio(audio: str | os.PathLike, sample_rate: int, mux_rate: int
                ) -> tuple[np.ndarray, np.ndarray]:
    wav = decode.read_audio(audio, sample_rate)
    if not np.isfinite(wav).all() or len(wav) < 2:
        raise InputError(audio, "audio holds no usable samples")
    return wav, decode.read_audio(audio, mux_rate)


def _blended_frames(frames: np.ndarray, source_of_frame: np.ndarray, face_of_frame: np.ndarray,
                    generated: np.ndarray, boxes: np.ndarray, feather: float, timer: Timer):
    """Output frames in order, made as the encoder asks for them (never all in memory)."""
    for k in progress(range(len(source_of_frame)), desc="dub blend+encode", unit="frame"):
        since = time.perf_counter()
        frame = frames[source_of_frame[k]]
        if face_of_frame[k] >= 0:
            frame = paste_face(frame, generated[face_of_frame[k]], boxes[source_of_frame[k]],
                               feather)
        timer.add("blend", since)
        yield frame


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
    take the pipeline's defaults. Frames without a face are passed through unchanged and counted;
    a face video without a face in any frame, or audio that cannot be decoded, is an InputError,
    and no output file is written.
    """
    from lipsync.device import pick_device

    resolved = resolve_options(options)
    face, audio = media_path(face), media_path(audio, audio=True)
    faces, audio_options, dub_options = resolved["faces"], resolved["audio"], resolved["dub"]
    output = Path(output)
    sidecar = Path(sidecar) if sidecar is not None else output.with_suffix(".json")
    device = pick_device(dub_options["device"])
    timer = Timer()
    started = time.perf_counter()

    since = time.perf_counter()
    frames, fps, still = _read_face(face, dub_options["still_fps"])
    wav, mux_audio = _read_audio(audio, int(audio_options["sample_rate"]),
                                 int(dub_options["encode"]["audio_sample_rate"]))
    audio_seconds = len(wav) / int(audio_options["sample_rate"])
    n_output = max(1, int(round(audio_seconds * fps)))
    source_of_frame = pingpong(n_output, len(frames))
    mel = melspectrogram(wav, audio_options)
    since = timer.add("decode", since)
    model, model_name, model_options, shape = _load(str(generator), device)
    since = timer.add("load", since)

    track = face_tracks.face_track(frames, detectors.build(faces), faces)
    if track is None:
        raise InputError(face, f"no face found in any of its {len(frames)} frames "
                               f"(detector {faces['detector']})")
    has_face = np.asarray(track.detected, dtype=bool)
    image_size = int(shape["image_size"])
    face_frames = np.flatnonzero(has_face)
    crops = face_tracks.crop_faces(frames[face_frames], track.boxes[face_frames], image_size)
    since = timer.add("detect", since)

    crop_index = np.full(len(frames), -1, dtype=np.int64)
    crop_index[face_frames] = np.arange(len(face_frames))
    dubbed = np.flatnonzero(crop_index[source_of_frame] >= 0)  # output frames that get a face
    mels = mel_windows(mel, n_output, fps, audio_options,
                       int(shape["mel_window"]))[dubbed]
    generated = generate_faces(model, crops, crop_index[source_of_frame[dubbed]], mels,
                               batch_size=int(dub_options["batch_size"]), device=device)
    since = timer.add("generate", since)

    face_of_frame = np.full(n_output, -1, dtype=np.int64)
    face_of_frame[dubbed] = np.arange(len(dubbed))
    blended = _blended_frames(frames, source_of_frame, face_of_frame, generated, track.boxes,
                              float(dub_options["feather"]), timer)
    written = write_video(output, blended, fps, mux_audio,
                          int(dub_options["encode"]["audio_sample_rate"]),
                          options=dub_options["encode"])
    timer.seconds["encode"] = time.perf_counter() - since - timer.seconds.get("blend", 0.0)
    total = time.perf_counter() - started

    passed = n_output - len(dubbed)
    if passed:
        log.warning("%s: %d of %d output frames have no face and pass through unchanged",
                    face, passed, n_output)
    record = {
        "generator": str(generator), "model": model_name, "model_options": model_options,
        "face": str(face), "audio": str(audio), "output": str(output), "still": still,
        "fps": fps, "frames": n_output, "source_frames": len(frames),
        "audio_seconds": audio_seconds, "frame_mapping": FRAME_MAPPING, "blend": BLEND_METHOD,
        "coverage": _coverage(has_face, len(dubbed), n_output, track.rejected),
        "encode": written, "device": str(device), "timings": timer.summary(n_output, total),
        "options": resolved, "provenance": describe(),
    }
    write_json(sidecar, record)
    log.info("dubbed %s with %s -> %s (%d frames, %d passed through, %.1f s)", face, audio,
             output, n_output, passed, total)
    return record


def write_strip(face: str | os.PathLike, dubbed: str | os.PathLike, output: str | os.PathLike,
                *, frames: int = 4, height: int = 144, still_fps: float = 25) -> None:
    """PNG of `frames` evenly spaced moments: the face input (top row) above the dubbed video."""
    from lipsync.data.sheets import contact_sheet

    made, _ = decode.read_video(dubbed)
    source, _, _ = _read_face(media_path(face), still_fps)
    picks = np.unique(np.linspace(0, len(made) - 1, min(frames, len(made))).round().astype(int))
    # The source frame each output frame showed (the same ping-pong as `dub`).
    shown = pingpong(len(made), len(source))[picks]

    def small(image: np.ndarray) -> np.ndarray:
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

    contact_sheet([[small(source[k]) for k in shown], [small(made[k]) for k in picks]], output)
