"""A GRID corpus already on disk: find one speaker's clips in either common layout, write its manifest.

Official archives unpacked: `s1/.../*.mpg` (any depth, e.g. `s1/video/mpg_vcd/s1/`), `s1/align/*.align`,
`s1/audio/*.wav` (50 kHz). Zenodo mirror unpacked: `s1/<clip>.mpg`, `alignments/s1/<clip>.align`.
"""

from __future__ import annotations

import os
from pathlib import Path

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.logs import get_logger
from lipsync.core.options import Option
from lipsync.data import manifest as manifest_io
from lipsync.data.manifest import ClipEntry

log = get_logger(__name__)

# GRID speaker 21 was recorded without video; the corpus ships audio only.
NO_VIDEO_SPEAKERS = frozenset({"s21"})
AUDIO_CHOICES = ("track", "wav50k")
# Config section `data.local`.
OPTIONS = {
    "root": Option(None, str, "Folder holding GRID, in the official layout "
                   "(s1/video/mpg_vcd/..., s1/align/...) or the mirror's (s1/<clip>.mpg, "
                   "alignments/s1/<clip>.align).", nullable=True),
}

# Folders (relative to the corpus root, {speaker} filled in) searched recursively for each kind of
# file, in order. Several patterns because users unpack the archives in different ways.
_VIDEO_FOLDERS = ("{speaker}", "video/{speaker}", "videos/{speaker}")
_ALIGN_FOLDERS = ("{speaker}", "alignments/{speaker}", "align/{speaker}", "aligns/{speaker}")
_WAV_FOLDERS = ("{speaker}", "audio/{speaker}", "audio_50k/{speaker}", "audio_50kHz/{speaker}")


def find_clips(speaker: str, root: str | os.PathLike, audio: str = "track") -> list[ClipEntry]:
    """Every clip of `speaker` under `root`, sorted by clip id.

    A clip is a `.mpg`; its alignment is the `.align` of the same name (empty when there is none);
    with `audio="wav50k"` its audio is the `.wav` of the same name, and a clip without one is an
    error naming it.
    """
    if audio not in AUDIO_CHOICES:
        raise LipsyncError(f"audio must be one of {AUDIO_CHOICES}, not {audio!r}")
    root = Path(root)
    videos = _find(root, speaker, _VIDEO_FOLDERS, ".mpg", required=True)
    if not videos:
        if speaker in NO_VIDEO_SPEAKERS:
            log.warning("GRID speaker %s has no video; it is left out (empty manifest)", speaker)
            return []
        raise InputError(root / speaker, f"no .mpg videos of speaker {speaker} found")
    aligns = _find(root, speaker, _ALIGN_FOLDERS, ".align")
    wavs = _find(root, speaker, _WAV_FOLDERS, ".wav") if audio == "wav50k" else {}
    entries = []
    for clip in sorted(videos):
        wav = None
        if audio == "wav50k":
            wav = wavs.get(clip)
            if wav is None:
                raise InputError(
                    videos[clip], f"clip {clip} has no 50 kHz .wav (audio: wav50k); looked under "
                    + ", ".join(str(root / f.format(speaker=speaker)) for f in _WAV_FOLDERS)
                )
        align = aligns.get(clip)
        entries.append(ClipEntry(speaker, clip, str(videos[clip]), wav and str(wav),
                                 align and str(align)))
    missing = sum(e.align is None for e in entries)
    if missing:
        log.info("speaker %s: %d of %d clips have no alignment", speaker, missing, len(entries))
    return entries


def count_clips(speaker: str, root: str | os.PathLike) -> int:
    """Number of clips of `speaker` under `root`: a directory listing, no decoding (DAG-build time)."""
    root = Path(root)
    count = len(_find(root, speaker, _VIDEO_FOLDERS, ".mpg", required=True))
    if count == 0 and speaker not in NO_VIDEO_SPEAKERS:
        raise InputError(root / speaker, f"no .mpg videos of speaker {speaker} found")
    return count


def write_manifest(
    speaker: str,
    root: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    audio: str = "track",
    max_clips_per_speaker: int | None = None,
) -> None:
    """Write `manifest` (one row per clip) for `speaker`'s clips under `root`."""
    entries = find_clips(speaker, root, audio=audio)
    if max_clips_per_speaker is not None:
        entries = entries[:max_clips_per_speaker]
    manifest_io.write_manifest(manifest, entries)
    log.info("speaker %s: %d clips listed in %s", speaker, len(entries), manifest)


def _find(root: Path, speaker: str, folders: tuple[str, ...], suffix: str,
          required: bool = False) -> dict[str, Path]:
    """Clip id -> file, searching `folders` recursively; the same clip twice is an error."""
    if required and not (root / speaker).is_dir() and speaker not in NO_VIDEO_SPEAKERS:
        raise InputError(root / speaker, f"speaker folder not found (corpus root {root})")
    found: dict[str, Path] = {}
    seen_folders: set[Path] = set()
    for pattern in folders:
        folder = root / pattern.format(speaker=speaker)
        if not folder.is_dir() or folder.resolve() in seen_folders:
            continue
        seen_folders.add(folder.resolve())
        for directory, subdirectories, files in os.walk(folder):
            # Hidden folders hold partial downloads; __MACOSX holds resource forks, not media.
            subdirectories[:] = sorted(d for d in subdirectories
                                       if not d.startswith(".") and d != "__MACOSX")
            for name in files:
                if name.startswith(".") or not name.lower().endswith(suffix):
                    continue
                path = Path(directory) / name
                clip = name[: -len(suffix)]
                if clip in found and found[clip] != path:
                    raise InputError(path, f"clip {clip} of speaker {speaker} found twice: "
                                     f"{found[clip]} and {path}; keep one")
                found[clip] = path
    return found
