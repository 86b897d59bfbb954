"""The synthetic demo corpus: GRID-format clips of a real face photograph whose mouth follows speech.

Each speaker is a deterministic variation (flip, scale, position, colour, background, voice) of a
face photograph an installed package ships; each clip is a GRID sentence spoken as voiced syllables,
with the mouth opening as the audio envelope rises, written as MPEG-1 + MP2 like GRID's own videos,
with a GRID word alignment, in the mirror layout (`{speaker}/<clip>.mpg`, `alignments/{speaker}/`).
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from lipsync.core.errors import LipsyncError
from lipsync.core.io import atomic_path, write_text
from lipsync.core.logs import get_logger
from lipsync.core.options import Option
from lipsync.data import local
from lipsync.data import manifest as manifest_io

log = get_logger(__name__)

FRAME_WIDTH, FRAME_HEIGHT = 360, 288
SAMPLE_RATE = 44100
ALIGN_UNITS_PER_SECOND = 25000
# MPEG-1 video allows only these frame rates.
MPEG1_FRAME_RATES = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001),
                     Fraction(30), Fraction(50), Fraction(60000, 1001), Fraction(60))


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


# name -> loader of an RGB photograph with one frontal face (the config's data.synthetic.faces).
FACE_SOURCES: dict[str, Callable[[], np.ndarray]] = {"astronaut": _astronaut}
# Config section `data.synthetic`.
OPTIONS = {
    "seed": Option(0, int, "Seeds every speaker's look, voice and sentences."),
    "faces": Option(["astronaut"], list, "Face photographs to animate, by name (FACE_SOURCES).",
                    items=str),
}

# The GRID sentence grammar: command colour preposition letter digit adverb.
COMMANDS = ("bin", "lay", "place", "set")
COLOURS = ("blue", "green", "red", "white")
PREPOSITIONS = ("at", "by", "in", "with")
LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # no w
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ADVERBS = ("again", "now", "please", "soon")

# Vowel of each word -> formants F1, F2, F3 (Hz; adult averages). F1 rises with jaw opening, so it
# also sets how far the mouth opens on that word.
_VOWELS = {
    "i": (280, 2250, 2900), "I": (400, 1900, 2550), "e": (480, 1900, 2500),
    "E": (580, 1800, 2500), "ae": (700, 1700, 2450), "a": (750, 1200, 2500),
    "o": (570, 850, 2400), "u": (320, 900, 2200), "V": (640, 1200, 2400),
}
_WORD_VOWEL = {
    "bin": "I", "lay": "e", "place": "e", "set": "E", "blue": "u", "green": "i", "red": "E",
    "white": "a", "at": "ae", "by": "a", "in": "I", "with": "I", "zero": "i", "one": "V",
    "two": "u", "three": "i", "four": "o", "five": "a", "six": "I", "seven": "E", "eight": "e",
    "nine": "a", "again": "E", "now": "a", "please": "i", "soon": "u",
}
_LETTER_VOWEL = {**dict.fromkeys("bcdegptvz", "i"), **dict.fromkeys("ahjk", "e"),
                 **dict.fromkeys("flmnsx", "E"), "i": "a", "y": "a", "o": "o", "q": "u", "u": "u",
                 "r": "a"}


def clip_words(clip: str) -> list[str]:
    """The six words of a GRID clip name (`bbaf2n` -> bin blue at f two now)."""
    if len(clip) != 6:
        raise LipsyncError(f"{clip!r} is not a GRID clip name (six initials)")
    by_initial = [{w[0]: w for w in group} for group in (COMMANDS, COLOURS, PREPOSITIONS)]
    try:
        words = [by_initial[i][clip[i]] for i in range(3)]
        if clip[3] not in LETTERS:
            raise KeyError(clip[3])
        words.append(clip[3])
        words.append(DIGITS[0] if clip[4] == "z" else DIGITS[int(clip[4])])
        words.append({w[0]: w for w in ADVERBS}[clip[5]])
    except (KeyError, ValueError):
        raise LipsyncError(f"{clip!r} does not follow the GRID grammar") from None
    return words


def clip_name(words: list[str]) -> str:
    """The GRID file name of six words: initials, digit as numeral, zero as z."""
    digit = "z" if words[4] == "zero" else str(DIGITS.index(words[4]))
    return words[0][0] + words[1][0] + words[2][0] + words[3] + digit + words[5][0]


def _random_clip_names(rng: np.random.Generator, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        words = [str(rng.choice(COMMANDS)), str(rng.choice(COLOURS)), str(rng.choice(PREPOSITIONS)),
                 str(rng.choice(LETTERS)), str(rng.choice(DIGITS)), str(rng.choice(ADVERBS))]
        name = clip_name(words)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


@dataclass(frozen=True)
class SpeakerStyle:
    """What makes one synthetic speaker look and sound unlike another."""

    face: str
    flip: bool
    face_height: float  # pixels, of the face box in the 360x288 frame
    face_centre: tuple[float, float]
    colour_gains: tuple[float, float, float]
    background_top: tuple[float, float, float]
    background_bottom: tuple[float, float, float]
    lip_colour: tuple[float, float, float]
    f0_hz: float
    speaking_rate: float


def _speaker_rng(seed: int, speaker: str, purpose: int) -> np.random.Generator:
    # crc32 rather than hash(): Python salts string hashes per process.
    return np.random.default_rng([seed, zlib.crc32(speaker.encode()), purpose])


def speaker_style(speaker: str, seed: int = 0, faces: list[str] | tuple[str, ...] = ("astronaut",)
                  ) -> SpeakerStyle:
    """The deterministic look and voice of `speaker` for `seed`."""
    if not faces:
        raise LipsyncError("data.synthetic.faces is empty; name at least one of "
                           f"{sorted(FACE_SOURCES)}")
    unknown = [f for f in faces if f not in FACE_SOURCES]
    if unknown:
        raise LipsyncError(f"unknown synthetic face(s) {unknown}; available: {sorted(FACE_SOURCES)}")
    rng = _speaker_rng(seed, speaker, 0)
    hue = rng.uniform(0, 1)
    top = _hsv_to_rgb(hue, rng.uniform(0.2, 0.6), rng.uniform(0.45, 0.85))
    bottom = _hsv_to_rgb(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.2, 0.6),
                         rng.uniform(0.25, 0.6))
    return SpeakerStyle(
        face=faces[int(rng.integers(len(faces)))],
        flip=bool(rng.integers(2)),
        face_height=float(rng.uniform(115, 145)),  # GRID's faces are ~140 px, centred low
        face_centre=(float(rng.uniform(155, 205)), float(rng.uniform(150, 170))),
        colour_gains=tuple(float(g) for g in rng.uniform(0.85, 1.12, size=3)),
        background_top=top,
        background_bottom=bottom,
        lip_colour=tuple(float(c) for c in (rng.uniform(140, 190), rng.uniform(50, 80),
                                            rng.uniform(60, 90))),
        f0_hz=float(rng.uniform(95, 230)),
        speaking_rate=float(rng.uniform(0.85, 1.15)),
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    pixel = np.array([[[(h % 1.0) * 180, s * 255, v * 255]]], dtype=np.uint8)
    return tuple(float(c) for c in cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0])


@dataclass(frozen=True)
class _FacePhoto:
    image: np.ndarray  # RGB float32, mouth painted over (closed)
    box: tuple[int, int, int, int]  # Haar face box x, y, w, h


@functools.lru_cache(maxsize=8)
def _face_photo(name: str) -> _FacePhoto:
    """The photograph with its face box, and its own mouth inpainted so ours can be drawn."""
    image = np.ascontiguousarray(FACE_SOURCES[name]()[..., :3])
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    boxes = _haar().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(60, 60))
    if len(boxes) == 0:
        raise LipsyncError(f"synthetic face source {name!r}: OpenCV finds no face in it")
    x, y, w, h = (int(v) for v in max(boxes, key=lambda b: b[2] * b[3]))
    mask = np.zeros(gray.shape, np.uint8)
    mouth_x, mouth_y = x + 0.5 * w, y + 0.83 * h
    cv2.ellipse(mask, (round(mouth_x), round(mouth_y)), (round(0.26 * w), round(0.1 * h)), 0, 0,
                360, 255, -1)
    image = cv2.inpaint(image, mask, 7, cv2.INPAINT_TELEA)
    return _FacePhoto(image.astype(np.float32), (x, y, w, h))


@functools.lru_cache(maxsize=1)
def _haar() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


@dataclass(frozen=True)
class _Scene:
    """A speaker's still frame and where its face and mouth are, in frame pixels."""

    frame: np.ndarray  # float32 H x W x 3 RGB
    face_width: float
    face_height: float
    mouth: tuple[float, float]
    chin_y: float


@functools.lru_cache(maxsize=64)
def _scene(style: SpeakerStyle) -> _Scene:
    photo = _face_photo(style.face)
    x, y, w, h = photo.box
    scale = style.face_height / h
    centre_x, centre_y = x + w / 2, y + h / 2
    sign = -1.0 if style.flip else 1.0
    # photo -> frame: scale (mirrored when flipped) about the face centre, moved to face_centre
    affine = np.array([[sign * scale, 0, style.face_centre[0] - sign * scale * centre_x],
                       [0, scale, style.face_centre[1] - scale * centre_y]], np.float32)
    size = (FRAME_WIDTH, FRAME_HEIGHT)
    person = cv2.warpAffine(photo.image, affine, size, flags=cv2.INTER_AREA,
                            borderMode=cv2.BORDER_REFLECT)
    # head-and-shoulders matte: hair and face, neck, shoulders; feathered edges
    mask = np.zeros(photo.image.shape[:2], np.float32)
    cv2.ellipse(mask, (round(centre_x), round(centre_y - 0.3 * h)),
                (round(0.8 * w), round(0.7 * h)), 0, 0, 360, 1.0, -1)
    cv2.ellipse(mask, (round(centre_x), round(centre_y + 0.08 * h)),
                (round(0.52 * w), round(0.6 * h)), 0, 0, 360, 1.0, -1)
    cv2.rectangle(mask, (round(centre_x - 0.32 * w), round(centre_y)),
                  (round(centre_x + 0.32 * w), round(centre_y + 1.3 * h)), 1.0, -1)
    cv2.ellipse(mask, (round(centre_x), round(centre_y + 2.6 * h)),
                (round(2.0 * w), round(1.55 * h)), 0, 0, 360, 1.0, -1)
    mask = cv2.warpAffine(mask, affine, size, flags=cv2.INTER_LINEAR)
    mask = cv2.GaussianBlur(mask, (0, 0), 2.5)[..., None]
    rows = np.linspace(0, 1, FRAME_HEIGHT, dtype=np.float32)[:, None, None]
    background = ((1 - rows) * np.array(style.background_top, np.float32)
                  + rows * np.array(style.background_bottom, np.float32))
    background = np.broadcast_to(background, person.shape)
    person = person * np.array(style.colour_gains, np.float32)
    frame = np.clip(mask * person + (1 - mask) * background, 0, 255).astype(np.float32)
    face_w = w * scale
    mouth = (style.face_centre[0], style.face_centre[1] + 0.33 * style.face_height)
    return _Scene(frame, face_w, style.face_height, mouth,
                  style.face_centre[1] + 0.62 * style.face_height)


@dataclass(frozen=True)
class Utterance:
    """One synthetic sentence: audio, mouth opening per sample, and word timing."""

    audio: np.ndarray  # float32 mono at SAMPLE_RATE, in [-1, 1]
    openness: np.ndarray  # float32 per audio sample, 0 closed .. 1 wide open
    words: list[tuple[float, float, str]]  # (start s, end s, word)


def speak(words: list[str], style: SpeakerStyle, duration_seconds: float,
          rng: np.random.Generator) -> Utterance:
    """The words as voiced syllables: harmonics of a gliding f0 shaped by the vowel's formants."""
    samples = int(round(duration_seconds * SAMPLE_RATE))
    lengths = rng.uniform(0.22, 0.36, len(words)) * style.speaking_rate
    gaps = rng.uniform(0.03, 0.09, len(words) - 1) * style.speaking_rate
    lead = duration_seconds * rng.uniform(0.13, 0.2)
    room = duration_seconds * 0.8 - lead  # leave trailing silence, as GRID clips do
    squeeze = min(1.0, room / (lengths.sum() + gaps.sum()))
    lengths, gaps = lengths * squeeze, gaps * squeeze
    audio = np.zeros(samples, np.float64)
    openness = np.zeros(samples, np.float32)
    timing = []
    start = lead
    for index, word in enumerate(words):
        end = start + lengths[index]
        timing.append((start, end, word))
        first, last = int(start * SAMPLE_RATE), min(int(end * SAMPLE_RATE), samples)
        seconds = np.arange(last - first) / SAMPLE_RATE
        envelope = _envelope(seconds, end - start)
        vowel = _VOWELS[_LETTER_VOWEL.get(word, "E") if len(word) == 1 else _WORD_VOWEL[word]]
        # pitch: a rise and fall within the word, declining over the sentence
        f0 = style.f0_hz * (1 - 0.12 * start / duration_seconds) * (
            1 + 0.08 * np.sin(np.pi * seconds / (end - start)))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        voiced = np.zeros_like(seconds)
        for harmonic in range(1, int(5000 / f0.max()) + 1):
            frequency = harmonic * f0.mean()
            gain = sum(1 / np.sqrt(1 + ((frequency - f) / (0.5 * b)) ** 2)
                       for f, b in zip(vowel, (90, 110, 160), strict=True))
            voiced += gain / harmonic ** 0.7 * np.sin(harmonic * phase)
        voiced /= np.abs(voiced).max() + 1e-9
        burst = np.zeros_like(seconds)  # a short consonant burst at the onset
        burst_n = min(len(seconds), int(0.03 * SAMPLE_RATE))
        burst[:burst_n] = np.diff(rng.standard_normal(burst_n + 1)) * 0.15 * np.hanning(burst_n)
        # open vowels (high F1) are both wider and louder, as in real speech
        opening = float(np.clip((vowel[0] - 150) / 600, 0.35, 1.0))
        audio[first:last] = opening * envelope * voiced + burst
        openness[first:last] = opening * envelope
        start = end + (gaps[index] if index < len(gaps) else 0)
    audio += rng.standard_normal(samples) * 1e-3  # room noise: GRID's silences are not digital zero
    audio *= 0.6 / np.abs(audio).max()
    return Utterance(audio.astype(np.float32), openness, timing)


def _envelope(seconds: np.ndarray, length: float) -> np.ndarray:
    attack, release = min(0.05, length / 3), min(0.08, length / 3)
    rise = np.clip(seconds / attack, 0, 1)
    fall = np.clip((length - seconds) / release, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))).astype(np.float64)


def frame_openness(utterance: Utterance, fps: float, frames: int) -> np.ndarray:
    """Mouth opening of each video frame: the mean over the samples the frame spans."""
    edges = np.round(np.arange(frames + 1) * SAMPLE_RATE / fps).astype(int)
    edges = np.clip(edges, 0, len(utterance.openness))
    return np.array([utterance.openness[a:b].mean() if b > a else 0.0
                     for a, b in zip(edges[:-1], edges[1:], strict=True)], np.float32)


def render(style: SpeakerStyle, openness: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Frames (N x 288 x 360 x 3 uint8 RGB): jaw lowered and lips parted by `openness`."""
    scene = _scene(style)
    yy, xx = np.mgrid[0:FRAME_HEIGHT, 0:FRAME_WIDTH].astype(np.float32)
    mouth_x, mouth_y = scene.mouth
    # how much each pixel follows the jaw: below the mouth, fading out sideways and under the chin
    jaw = (np.clip((yy - mouth_y) / (0.06 * scene.face_height), 0, 1)
           * np.exp(-(((xx - mouth_x) / (0.42 * scene.face_width)) ** 4))
           * np.clip(1 - (yy - scene.chin_y) / (0.3 * scene.face_height), 0, 1))
    jaw_drop = 0.09 * scene.face_height
    # a slow, small head sway, as a seated speaker has
    sway_phase = rng.uniform(0, 2 * np.pi, 2)
    sway_amplitude = rng.uniform(0.5, 1.5, 2)
    frames = np.empty((len(openness), FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
    for index, opening in enumerate(openness):
        dx, dy = sway_amplitude * np.sin(2 * np.pi * index / 60 + sway_phase)
        map_x = (xx - dx).astype(np.float32)
        map_y = (yy - dy - opening * jaw_drop * jaw).astype(np.float32)
        image = cv2.remap(scene.frame, map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
        _draw_mouth(image, scene, style, (mouth_x + dx, mouth_y + dy), float(opening))
        frames[index] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def _draw_mouth(image: np.ndarray, scene: _Scene, style: SpeakerStyle,
                centre: tuple[float, float], opening: float) -> None:
    fixed = 16  # cv2 fixed-point: 4 fractional bits, so the mouth moves smoothly below a pixel
    width, height = 0.23 * scene.face_width, scene.face_height

    def ellipse(dy: float, ax: float, ay: float, colour, start=0, end=360) -> None:
        cv2.ellipse(image, (round(centre[0] * fixed), round((centre[1] + dy) * fixed)),
                    (round(ax * fixed), round(max(ay, 0.5) * fixed)), 0, start, end, colour, -1,
                    cv2.LINE_AA, 4)

    lip = style.lip_colour
    drop = 0.5 * opening * 0.09 * height  # the lower lip rides with the jaw
    ellipse(drop / 2, width, 0.035 * height + 0.1 * opening * height, lip)
    if opening > 0.03:
        cavity_h = 0.085 * opening * height
        ellipse(drop / 2, 0.78 * width, cavity_h, (40, 14, 20))
        ellipse(drop / 2 - 0.55 * cavity_h, 0.6 * width, 0.3 * cavity_h, (205, 195, 185), 180, 360)
    else:
        cv2.line(image, (round((centre[0] - width) * fixed), round(centre[1] * fixed)),
                 (round((centre[0] + width) * fixed), round(centre[1] * fixed)),
                 (90, 35, 40), 2, cv2.LINE_AA, 4)


def write_clip(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray,
               fps: float) -> None:
    """An MPEG-1 program stream (mpeg1video + MP2 44.1 kHz stereo), as GRID ships, atomically."""
    rate = Fraction(fps).limit_denominator(1001)
    if rate not in MPEG1_FRAME_RATES:
        raise LipsyncError(f"MPEG-1 video cannot store {fps} frames/s; use one of "
                           f"{[float(r) for r in MPEG1_FRAME_RATES]}")
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    per_frame = np.round(np.arange(len(frames) + 1) * SAMPLE_RATE / float(rate)).astype(int)
    per_frame[-1] = len(pcm)
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mpeg")
        try:
            video = container.add_stream("mpeg1video", rate=rate)
            video.width, video.height, video.pix_fmt = FRAME_WIDTH, FRAME_HEIGHT, "yuv420p"
            video.bit_rate = 1_150_000  # VCD rate, as GRID's normal-quality videos
            video.codec_context.thread_count = 1  # identical bytes for identical input
            sound = container.add_stream("mp2", rate=SAMPLE_RATE, layout="stereo")
            sound.bit_rate = 224_000
            sample_clock = 0
            for index, rgb in enumerate(frames):
                container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                # audio in step with the video, so the muxer interleaves them evenly
                chunk = pcm[per_frame[index]:per_frame[index + 1]]
                if len(chunk):
                    stereo = np.repeat(chunk, 2)[None, :]
                    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
                    frame.sample_rate, frame.pts = SAMPLE_RATE, sample_clock
                    frame.time_base = Fraction(1, SAMPLE_RATE)
                    sample_clock += len(chunk)
                    container.mux(sound.encode(frame))
            container.mux(video.encode(None))
            container.mux(sound.encode(None))
        finally:
            container.close()


def alignment_text(utterance: Utterance, duration_seconds: float) -> str:
    """GRID `.align` lines: `start end word` in 1/25000 s, sil before and after the sentence."""
    def units(seconds: float) -> int:
        return int(round(seconds * ALIGN_UNITS_PER_SECOND))

    words = utterance.words
    lines = [(0, units(words[0][0]), "sil")]
    for index, (start, end, word) in enumerate(words):
        # GRID's word spans touch: a pause between words belongs to the word before it
        stop = words[index + 1][0] if index + 1 < len(words) else end
        lines.append((units(start), units(stop), word))
    lines.append((units(words[-1][1]), units(duration_seconds), "sil"))
    return "".join(f"{a} {b} {w}\n" for a, b, w in lines)


def make_speaker(
    speaker: str,
    root: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    seed: int = 0,
    faces: list[str] | tuple[str, ...] = ("astronaut",),
    clips_per_speaker: int = 6,
    fps: float = 25,
    frames_per_clip: int = 75,
) -> None:
    """Write `clips_per_speaker` synthetic clips of `speaker` under `root`, then its manifest.

    Deterministic from (seed, speaker). Clips of an earlier run with other settings are removed
    first, so the manifest lists exactly this run's clips.
    """
    root = Path(root)
    style = speaker_style(speaker, seed, list(faces))
    names = _random_clip_names(_speaker_rng(seed, speaker, 1), clips_per_speaker)
    video_folder, align_folder = root / speaker, root / "alignments" / speaker
    _remove_stale(video_folder, align_folder, set(names))
    duration = frames_per_clip / fps
    for index, name in enumerate(names):
        rng = _speaker_rng(seed, speaker, 1000 + index)
        utterance = speak(clip_words(name), style, duration, rng)
        frames = render(style, frame_openness(utterance, fps, frames_per_clip), rng)
        write_clip(video_folder / f"{name}.mpg", frames, utterance.audio, fps)
        write_text(align_folder / f"{name}.align", alignment_text(utterance, duration))
    log.info("synthetic speaker %s: %d clips in %s", speaker, len(names), video_folder)
    manifest_io.write_manifest(manifest, local.find_clips(speaker, root))


def _remove_stale(video_folder: Path, align_folder: Path, keep: set[str]) -> None:
    for folder, suffix in ((video_folder, ".mpg"), (align_folder, ".align")):
        if not folder.is_dir():
            continue
        for path in folder.glob(f"*{suffix}"):
            if path.stem not in keep:
                log.info("removing %s from an earlier synthetic run", path)
                path.unlink()
