"""What made an output: package and library versions, stored beside every result."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import lipsync

_LIBRARIES = ("torch", "torchvision", "numpy", "h5py", "librosa", "opencv-python", "av",
              "face-alignment", "pytorch-fid", "scikit-image", "pandas", "snakemake")


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(lipsync.__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def describe() -> dict:
    """A JSON-ready record of the code and libraries that produced an output."""
    return {
        "lipsync": lipsync.__version__,
        "git_revision": _git_revision(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
