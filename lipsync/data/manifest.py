"""Per-speaker clip manifests: the one table every corpus source writes and every stage reads.

Columns: speaker, clip, video, audio, align (absolute paths; audio empty when the audio is the
track inside the video, align empty when the corpus has no alignment for the clip).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pandas as pd

from lipsync.core.errors import InputError
from lipsync.core.io import write_tsv

COLUMNS = ["speaker", "clip", "video", "audio", "align"]


@dataclass(frozen=True)
class ClipEntry:
    speaker: str
    clip: str
    video: str
    audio: str | None
    align: str | None


def write_manifest(path: str | os.PathLike, entries: list[ClipEntry]) -> None:
    """Write entries sorted by clip id (the order shards slice)."""
    rows = [
        {
            "speaker": e.speaker,
            "clip": e.clip,
            "video": os.path.abspath(e.video),
            "audio": os.path.abspath(e.audio) if e.audio else "",
            "align": os.path.abspath(e.align) if e.align else "",
        }
        for e in sorted(entries, key=lambda e: e.clip)
    ]
    write_tsv(path, pd.DataFrame(rows, columns=COLUMNS))


def read_manifest(path: str | os.PathLike) -> list[ClipEntry]:
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(path, f"cannot read manifest: {error}") from error
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise InputError(path, f"manifest lacks columns {sorted(missing)}")
    return [
        ClipEntry(r.speaker, r.clip, r.video, r.audio or None, r.align or None)
        for r in frame.itertuples(index=False)
    ]


def shard_entries(entries: list[ClipEntry], shard: int, shard_size: int) -> list[ClipEntry]:
    """Shard `k` is clips [k * shard_size, (k + 1) * shard_size) of the sorted list; size 0 = all."""
    entries = sorted(entries, key=lambda e: e.clip)
    if shard_size == 0:
        return entries if shard == 0 else []
    return entries[shard * shard_size:(shard + 1) * shard_size]


def read_shard(path: str | os.PathLike, shard: int, shard_size: int) -> list[ClipEntry]:
    return shard_entries(read_manifest(path), shard, shard_size)


def shard_attributes(options: dict, shard: int, shard_size: int,
                     entries: list[ClipEntry]) -> dict:
    """HDF5 file attributes of a per-shard output: what made it, and which speaker shard it is."""
    from lipsync.core import provenance

    attributes = {
        "options": json.dumps(options, sort_keys=True),
        "provenance": json.dumps(provenance.describe(), sort_keys=True),
        "shard": shard,
        "shard_size": shard_size,
    }
    if entries:  # a manifest holds one speaker; later stages read it from here
        attributes["speaker"] = entries[0].speaker
    return attributes
