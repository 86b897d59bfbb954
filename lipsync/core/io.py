"""Atomic file output and small file helpers shared by every stage."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A job killed half-way leaves at most a hidden `.tmp` file behind, never a partial output that
    a rerun would take for complete; the next write of `path` removes it (`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    # The writer's pid in the name tells a killed job's temporary from a live one's.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates owner-only files; give outputs the usual umask-based mode instead.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _writer_alive(temporary: Path, output_name: str) -> bool:
    """Whether the process that named `temporary` (.NAME.PID-XXXX.tmp) still runs here."""
    pid, separator, _ = temporary.name[len(output_name) + 2:].partition("-")
    if not separator or not pid.isdigit():
        return False  # made before temporaries carried a pid: no writer left to ask
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the hidden temporaries of `path` (`.NAME.*.tmp` beside it) whose writer no longer
    runs: what a killed job left (a face shard's is ~5 MB). Returns what was removed."""
    path = Path(path)
    removed = []
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not _writer_alive(temporary, path.name):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_tsv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as a tab-separated file, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def sha256_file(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` name one file: the same path, a symlink to it, or a hard link."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # same device and inode: symlinks followed, hard links too
    return a.resolve() == b.resolve()


def refuse_overwriting(outputs: dict[str, str | os.PathLike],
                       inputs: dict[str, str | os.PathLike]) -> None:
    """Raise LipsyncError when an output (by role) is one of the inputs, before any work is done:
    writing it would destroy the user's file."""
    from lipsync.core.errors import LipsyncError

    for out_role, out in outputs.items():
        for in_role, source in inputs.items():
            if same_file(out, source):
                raise LipsyncError(f"{out_role} {out} is the {in_role} input {source} (the same "
                                   "file, a link to it or a hard link); refusing to overwrite an "
                                   "input: choose another output path")
