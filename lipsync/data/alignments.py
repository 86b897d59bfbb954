"""GRID word alignments: parse `.align` files, check them against GRID's sentence grammar, and
write one word table per speaker (`results/alignments/{speaker}.tsv`) that the lip reader, the
content-swap defect and the WER/CER metrics read by (speaker, clip).

An `.align` line is `start end word`, times in 1/25000 s (GRID's HTK convention); `sil` marks
silence and `sp` a short pause. Every GRID sentence is six words, one per grammar slot: command,
colour, preposition, letter, digit, adverb ("bin blue at l seven soon").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lipsync.core.errors import InputError
from lipsync.core.io import write_tsv
from lipsync.core.logs import get_logger
from lipsync.data.manifest import read_manifest

log = get_logger(__name__)

UNITS_PER_SECOND = 25000.0
SILENCE = ("sil", "sp")
LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # GRID's letter slot has no "w"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# GRID's grammar (Cooke et al. 2006): the word each slot of a sentence takes, in slot order.
GRAMMAR: dict[str, tuple[str, ...]] = {
    "command": ("bin", "lay", "place", "set"),
    "colour": ("blue", "green", "red", "white"),
    "preposition": ("at", "by", "in", "with"),
    "letter": LETTERS,
    "digit": DIGITS,
    "adverb": ("again", "now", "please", "soon"),
}
SLOTS = tuple(GRAMMAR)
COLUMNS = ["speaker", "clip", "slot", "slot_name", "word", "start_seconds", "end_seconds"]


@dataclass(frozen=True)
class Segment:
    """One aligned span: a word (or `sil`/`sp`) from `start` to `end` seconds."""

    start: float
    end: float
    word: str


def parse_align(path: str | os.PathLike) -> list[Segment]:
    """The segments of one `.align` file, in time order; refuses malformed lines by number."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read alignment: {error}") from None
    segments: list[Segment] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise InputError(path, f"line {number}: expected 'start end word', got {line!r}")
        try:
            start, end = int(fields[0]), int(fields[1])
        except ValueError:
            raise InputError(path, f"line {number}: times must be integers (1/25000 s), got "
                                   f"{line!r}") from None
        if end < start or (segments and start < segments[-1].end * UNITS_PER_SECOND - 0.5):
            raise InputError(path, f"line {number}: span {start}-{end} is reversed or overlaps "
                                   "the previous line")
        segments.append(Segment(start / UNITS_PER_SECOND, end / UNITS_PER_SECOND,
                                fields[2].lower()))
    if not segments:
        raise InputError(path, "alignment is empty")
    return segments


def sentence(segments: Iterable[Segment], path: str | os.PathLike = "") -> list[Segment]:
    """The six spoken words of a GRID sentence, checked slot by slot against the grammar."""
    words = [s for s in segments if s.word not in SILENCE]
    if len(words) != len(SLOTS):
        raise InputError(path, f"{len(words)} words ({' '.join(w.word for w in words)}); a GRID "
                               f"sentence has {len(SLOTS)}: {', '.join(SLOTS)}")
    for slot, word in zip(SLOTS, words, strict=True):
        if word.word not in GRAMMAR[slot]:
            raise InputError(path, f"word {word.word!r} cannot fill GRID's {slot} slot "
                                   f"({', '.join(GRAMMAR[slot])})")
    return words


def word_table(entries: Iterable) -> tuple[pd.DataFrame, list[str]]:
    """One row per spoken word of every clip with an alignment (manifest entries), and one line
    per clip left out with the reason (no alignment, or one that breaks the grammar)."""
    rows, problems = [], []
    for entry in entries:
        if not entry.align:
            problems.append(f"{entry.speaker}/{entry.clip}: no alignment")
            continue
        try:
            words = sentence(parse_align(entry.align), entry.align)
        except InputError as error:
            problems.append(f"{entry.speaker}/{entry.clip}: {error}")
            continue
        rows.extend([entry.speaker, entry.clip, slot, SLOTS[slot], w.word, w.start, w.end]
                    for slot, w in enumerate(words))
    return pd.DataFrame(rows, columns=COLUMNS), problems


def write_words(manifest: str | os.PathLike, output: str | os.PathLike) -> pd.DataFrame:
    """The word table of one speaker's manifest -> `output` (TSV). Clips left out are logged."""
    table, problems = word_table(read_manifest(manifest))
    for problem in problems:
        log.warning("alignment left out: %s", problem)
    write_tsv(output, table)
    log.info("%d words of %d clips -> %s (%d clips left out)", len(table),
             table["clip"].nunique() if len(table) else 0, output, len(problems))
    return table


def read_words(paths: Iterable[str | os.PathLike]) -> dict[tuple[str, str], list[Segment]]:
    """(speaker, clip) -> its six word segments in slot order, from word tables."""
    out: dict[tuple[str, str], list[Segment]] = {}
    for path in paths:
        try:
            table = pd.read_csv(path, sep="\t", dtype={"speaker": str, "clip": str, "word": str},
                                keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise InputError(path, f"cannot read word table: {error}") from None
        missing = set(COLUMNS) - set(table.columns)
        if missing:
            raise InputError(path, f"word table lacks columns {sorted(missing)}")
        for (speaker, clip), rows in table.groupby(["speaker", "clip"], sort=False):
            rows = rows.sort_values("slot")
            if list(rows["slot"]) != list(range(len(SLOTS))):
                raise InputError(path, f"{speaker}/{clip}: slots {list(rows['slot'])}, expected "
                                       f"0..{len(SLOTS) - 1}")
            out[(speaker, clip)] = [Segment(float(r.start_seconds), float(r.end_seconds), r.word)
                                    for r in rows.itertuples(index=False)]
    return out


def transcript(words: Iterable[Segment]) -> str:
    return " ".join(w.word for w in words)
