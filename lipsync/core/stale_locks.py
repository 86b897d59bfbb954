"""Remove the locks a killed snakemake left behind, so a rerun needs no `snakemake --unlock`.

Snakemake's own locks (.snakemake/locks) record no owner, so they outlive a killed snakemake
(kill -9, out of memory, a lost session) and stop every rerun. Each snakemake of this workflow
also holds a shared OS lock on .snakemake/lipsync.run.lock, which the OS releases however the
process ends: getting it exclusively means no other snakemake runs here, so Snakemake's locks are
stale. Called by workflow/rules/common.smk.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO


def hold_run_lock(state: str | Path, warn: Callable[[str], None] = print) -> IO | None:
    """Clear stale Snakemake locks under `state` (the .snakemake folder), then hold the shared
    run lock: the returned handle must stay open as long as this snakemake runs.

    `warn` says what was removed (snakemake's logger.warning in the workflow). Returns None,
    clearing nothing, where the file system has no OS locks.
    """
    state = Path(state)
    state.mkdir(exist_ok=True)
    handle = open(state / "lipsync.run.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # another snakemake runs in this directory: its locks are live
    except OSError:
        handle.close()
        return None  # no OS locks here: stale locks need `snakemake --unlock`
    else:
        stale = state / "locks"
        if stale.is_dir() and any(stale.iterdir()):
            warn(f"Removing the locks of a snakemake that was killed ({stale})")
            shutil.rmtree(stale)
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle
