"""Logging set-up: one log file per job, plus the terminal."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def setup(log_path: str | None = None, level: int = logging.INFO) -> None:
    """Send `lipsync` log records to stderr and, if given, to `log_path` (appending)."""
    root = logging.getLogger("lipsync")
    root.setLevel(level)
    root.handlers.clear()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    # Under torchrun or srun every rank runs this; only rank 0 writes the job's log file.
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    if log_path and rank == 0:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
