"""Choose GRIDTest, GRIDSmall and GRIDFull clips per speaker: a seeded, deterministic draw from the
clips whose faces passed coverage and whose audio gave a mel spectrogram.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from lipsync.core.errors import InputError
from lipsync.core.io import write_tsv
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults

log = get_logger(__name__)

# Config section `splits`: clips per speaker of each split (the paper's GRIDTest/Small/Full).
OPTIONS = {
    "seed": Option(0, int, "Seeds the draw of each speaker's clips into the splits."),
    "test": Option(20, int, "GRIDTest clips per speaker.", minimum=0),
    "small": Option(300, int, "GRIDSmall clips per speaker.", minimum=0),
    "full": Option(980, int, "GRIDFull clips per speaker.", minimum=0),
}
DEFAULTS = defaults(OPTIONS)
COVERAGE_COLUMNS = ["speaker", "clip", "frames", "detected", "coverage", "status", "reason"]
SPLITS = ("small", "full", "test")


def shard_speaker(handle: h5py.File, path: str | os.PathLike) -> str:
    """The speaker of a faces or mels shard: its `speaker` attribute, else its folder's name
    (shards live at faces/{speaker}/{shard}.h5)."""
    speaker = handle.attrs.get("speaker")
    if speaker is None:
        return Path(path).parent.name
    return speaker.decode() if isinstance(speaker, bytes) else str(speaker)


def shard_clips(paths: list[str | os.PathLike], member: str) -> dict[tuple[str, str], str]:
    """Map (speaker, clip) -> shard path for every `/clips/{clip}` group holding `member`."""
    index: dict[tuple[str, str], str] = {}
    for path in paths:
        try:
            with h5py.File(path, "r") as handle:
                default_speaker = shard_speaker(handle, path)
                clips = handle.get("clips", {})
                for clip, group in clips.items():
                    if member not in group:
                        continue
                    speaker = group.attrs.get("speaker", default_speaker)
                    speaker = speaker.decode() if isinstance(speaker, bytes) else str(speaker)
                    index[(speaker, clip)] = str(path)
        except OSError as error:
            raise InputError(path, f"cannot read HDF5 shard: {error}") from error
    return index


def read_coverage(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate coverage TSVs, checking their columns."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path, sep="\t", dtype={"speaker": str, "clip": str, "status": str,
                                                       "reason": str}, keep_default_na=False)
        except (OSError, pd.errors.ParserError) as error:
            raise InputError(path, f"cannot read coverage TSV: {error}") from error
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame(columns=COVERAGE_COLUMNS)
        missing = set(COVERAGE_COLUMNS) - set(frame.columns)
        if missing:
            raise InputError(path, f"coverage TSV lacks columns {sorted(missing)}")
        bad = set(frame["status"]) - {"ok", "excluded"}
        if bad:
            raise InputError(path, f"unknown coverage status {sorted(bad)} (expected ok|excluded)")
        frames.append(frame[COVERAGE_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=COVERAGE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def speaker_seed(seed: int, speaker: str) -> int:
    """Combine the split seed with a speaker id, identically on every machine and Python run."""
    digest = hashlib.sha256(f"{int(seed)}:{speaker}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def assign_clips(clips: list[str], speaker: str, *, seed: int, test: int, small: int,
                 full: int) -> dict[str, list[str]]:
    """Split one speaker's usable clips: a seeded permutation; the first `test` go to test, of the
    rest the first `full` go to full and the first `small` of those to small (small ⊂ full)."""
    order = sorted(clips)
    permutation = np.random.default_rng(speaker_seed(seed, speaker)).permutation(len(order))
    shuffled = [order[k] for k in permutation]
    test_clips = shuffled[:test]
    full_clips = shuffled[test:test + full]
    return {"test": test_clips, "full": full_clips, "small": full_clips[:small]}


def mel_exclusions(paths: list[str | os.PathLike]) -> dict[tuple[str, str], str]:
    """(speaker, clip) -> reason for every clip a mels shard's `/status` table excluded.

    Shards without a status table (older files) contribute nothing.
    """
    from lipsync.data.audio import read_status

    reasons: dict[tuple[str, str], str] = {}
    for path in paths:
        with h5py.File(path, "r") as handle:
            if "status" not in handle:
                continue
        table = read_status(path)
        for row in table[table["status"] != "ok"].itertuples(index=False):
            reasons[(str(row.speaker), str(row.clip))] = str(row.reason)
    return reasons


def write_splits(coverage_paths: list[str | os.PathLike], mels_paths: list[str | os.PathLike],
                 output_dir: str | os.PathLike, *, options: dict) -> dict[str, pd.DataFrame]:
    """Write output_dir/{small,full,test}.tsv (speaker, clip) and output_dir/summary.tsv.

    The summary has one row per speaker: clip counts, `excluded_reasons` (cause: count) and
    `excluded_clips` (clip: cause, for each excluded clip, with the mels job's reason when its
    audio was refused).
    """
    options = {**DEFAULTS, **options}
    output_dir = Path(output_dir)
    coverage = read_coverage(coverage_paths)
    duplicated = coverage.duplicated(["speaker", "clip"])
    if duplicated.any():
        first = coverage[duplicated].iloc[0]
        raise InputError(coverage_paths[0], f"clip {first.speaker}/{first.clip} appears in more "
                                            "than one coverage row")
    with_mel = set(shard_clips(mels_paths, "mel"))
    audio_reasons = mel_exclusions(mels_paths)

    reasons: dict[str, Counter] = {}
    excluded: dict[str, list[str]] = {}
    usable: dict[str, list[str]] = {}
    for row in coverage.itertuples(index=False):
        speaker = str(row.speaker)
        usable.setdefault(speaker, [])
        reasons.setdefault(speaker, Counter())
        excluded.setdefault(speaker, [])
        if row.status != "ok":
            cause = row.reason or "excluded"
            detail = cause
        elif (speaker, row.clip) not in with_mel:
            cause = "no mel spectrogram"
            audio_reason = audio_reasons.get((speaker, row.clip))
            detail = f"{cause} ({audio_reason})" if audio_reason else cause
        else:
            usable[speaker].append(row.clip)
            continue
        reasons[speaker][cause] += 1
        excluded[speaker].append(f"{row.clip}: {detail}")

    rows = {name: [] for name in SPLITS}
    summary = []
    for speaker in sorted(usable):
        chosen = assign_clips(usable[speaker], speaker, seed=options["seed"],
                              test=options["test"], small=options["small"], full=options["full"])
        wanted = {name: options[name] for name in SPLITS}
        short = {name: wanted[name] - len(chosen[name]) for name in SPLITS
                 if len(chosen[name]) < wanted[name]}
        if short:
            log.warning("speaker %s has %d usable clips; short of %s", speaker,
                        len(usable[speaker]),
                        ", ".join(f"{name} by {count}" for name, count in short.items()))
        for name in SPLITS:
            rows[name].extend({"speaker": speaker, "clip": clip} for clip in sorted(chosen[name]))
        summary.append({
            "speaker": speaker,
            "clips": len(usable[speaker]) + sum(reasons[speaker].values()),
            "usable": len(usable[speaker]),
            "excluded": sum(reasons[speaker].values()),
            "excluded_reasons": "; ".join(f"{reason}: {count}" for reason, count
                                          in sorted(reasons[speaker].items())),
            "excluded_clips": "; ".join(sorted(excluded[speaker])),
            **{name: len(chosen[name]) for name in ("test", "small", "full")},
        })

    tables = {name: pd.DataFrame(rows[name], columns=["speaker", "clip"]) for name in SPLITS}
    tables["summary"] = pd.DataFrame(summary, columns=["speaker", "clips", "usable", "excluded",
                                                       "excluded_reasons", "excluded_clips",
                                                       "test", "small", "full"])
    for name, table in tables.items():
        write_tsv(output_dir / f"{name}.tsv", table)
    log.info("splits: %s", ", ".join(f"{name} {len(tables[name])} clips" for name in SPLITS))
    return tables


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split's clip list (speaker, clip)."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["speaker", "clip"])
    except (OSError, pd.errors.ParserError) as error:
        raise InputError(path, f"cannot read split TSV: {error}") from error
    if not {"speaker", "clip"} <= set(frame.columns):
        raise InputError(path, "split TSV needs columns speaker and clip")
    return frame[["speaker", "clip"]]
