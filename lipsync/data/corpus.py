"""The `data` config section: which corpus, which speakers, how its clips are sharded into jobs.

The workflow reads it to lay out its jobs; each source's own options are declared by the module
that fetches or reads it (grid.py, local.py, synthetic.py).
"""

from __future__ import annotations

from lipsync.core.options import Option, defaults
from lipsync.data import grid, local, synthetic
from lipsync.data.audio import SOURCES as AUDIO_SOURCES

OPTIONS = {
    "source": Option("synthetic", str, "Where the corpus comes from.",
                     one_of=("grid", "local", "synthetic")),
    "speakers": Option(["s1", "s2"], list, "GRID speaker ids (s1 .. s34); s21 has no video and is "
                       "skipped with a note.", items=str, pattern=r"s[0-9]+"),
    "clips_per_speaker": Option(1000, int, "Clips expected per speaker; lays out shards before "
                                "the corpus is on disk (grid, synthetic). For a local corpus the "
                                "clips on disk are counted instead.", minimum=1),
    "max_clips_per_speaker": Option(None, int, "Use only the first N clips (sorted by id) of "
                                    "each speaker; null: all.", minimum=1, nullable=True),
    "shard_size": Option(0, int, "Clips per preprocessing job; 0: one job per speaker.",
                         minimum=0),
    "audio": Option("track", str, "track: the audio inside each .mpg; wav50k: GRID's 50 kHz wav "
                    "files.", one_of=AUDIO_SOURCES),
    "grid": grid.OPTIONS,
    "local": local.OPTIONS,
    "synthetic": synthetic.OPTIONS,
}
DEFAULTS = defaults(OPTIONS)
