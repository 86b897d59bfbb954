"""Progress bars that stay readable in batch logs (SLURM, Snakemake) as well as on a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable=None, **kwargs):
    """tqdm with sane defaults: a live bar on a terminal, a line every 30 s in a log file."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
        kwargs.setdefault("ascii", True)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
