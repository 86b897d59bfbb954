"""Shared fixtures: where the real GRID clips live (tests that need them skip without them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_folder(variable: str, name: str) -> Path:
    return Path(os.environ.get(variable, REPO.parent / "shared" / name))


@pytest.fixture(scope="session")
def grid_samples() -> Path:
    """../shared/grid-samples (or $LIPSYNC_GRID_SAMPLES): three real GRID clips."""
    folder = _shared_folder("LIPSYNC_GRID_SAMPLES", "grid-samples")
    if not (folder / "bbaf2n.mpg").exists():
        pytest.skip(f"real GRID sample clips not found in {folder}")
    return folder


@pytest.fixture(scope="session")
def grid_s1() -> Path:
    """../shared/grid-s1 (or $LIPSYNC_GRID_S1): 320 real clips of speaker s1, mirror layout."""
    folder = _shared_folder("LIPSYNC_GRID_S1", "grid-s1")
    if not (folder / "s1").is_dir():
        pytest.skip(f"GRID speaker s1 clips not found in {folder}")
    return folder
