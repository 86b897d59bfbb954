"""One format for every trained network: training checkpoints and trained-network files (generator,
sync expert, ...) name the networks they hold under "networks", with the model, its options, the
counts and provenance. Save atomically, find, load; resume from the newest one that loads."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import atomic_path
from lipsync.core.logs import get_logger

log = get_logger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def run_folder(output: str | os.PathLike) -> Path:
    """Where a network file's checkpoints and logs go: results/syncnet/expert.pt ->
    results/syncnet/expert/ (beside the file, named after it)."""
    output = Path(output)
    return output.parent / output.stem


def checkpoint_path(folder: str | os.PathLike, samples: int) -> Path:
    # Zero-padded sample count: names sort in training order.
    return Path(folder) / f"checkpoint-{samples:012d}.pt"


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoints in `folder`, oldest first (temporary files of interrupted saves ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def latest_loadable_checkpoint(folder: str | os.PathLike, map_location="cpu"
                               ) -> tuple[Path | None, dict | None]:
    """(path, state) of the newest checkpoint in `folder` that loads, or (None, None) if there is
    none. A newer one that does not load (truncated by a full disk, copied half-way) is skipped
    with a warning naming it and why, and left in place: the next save of that sample count
    replaces it. If every checkpoint fails, LipsyncError lists them rather than start over.
    """
    checkpoints = list_checkpoints(folder)
    problems = []
    for path in reversed(checkpoints):
        try:
            state = load(path, map_location=map_location)
        except InputError as error:
            log.warning("skipping checkpoint %s: %s; trying the one before", path, error.problem)
            problems.append(str(error))
            continue
        if problems:
            log.warning("resuming from %s instead (%d newer checkpoint(s) skipped)", path,
                        len(problems))
        return path, state
    if problems:
        raise LipsyncError(f"no checkpoint in {folder} loads ({'; '.join(problems)}); move them "
                           "aside to start over")
    return None, None


def save(path: str | os.PathLike, state: dict) -> Path:
    """torch.save `state` to `path` atomically (a killed job leaves no half-written file)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def prune(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint or trained-network file written by lipsync.training.loop (our own files: not
    weights-only); which networks it holds is the keys of its "networks"."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise InputError(path, f"not a readable torch checkpoint ({error})") from None
    if (not isinstance(state, dict) or not isinstance(state.get("networks"), dict)
            or "model" not in state):
        raise InputError(path, "not a lipsync checkpoint (no networks or model name)")
    return state


# Entries of a checkpoint that are training state, not a description of the network.
_TRAINING_STATE = ("networks", "optimizers", "scalers", "rng")


def load_network(path: str | os.PathLike, network: str, build: Callable[[dict], nn.Module],
                 device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Network `network` of a checkpoint or trained-network file, in eval mode, and what the file
    says about it. `build(state)` makes the empty network from the file's "model" and
    "model_options"."""
    state = load(path)
    if network not in state["networks"]:
        raise InputError(path, f"holds no {network} network (it holds "
                               f"{', '.join(state['networks']) or 'none'})")
    module = build(state)
    try:
        module.load_state_dict(state["networks"][network])
    except RuntimeError as error:
        raise InputError(path, f"{network} weights do not fit model {state['model']!r}: "
                               f"{error}") from None
    info = {k: v for k, v in state.items() if k not in _TRAINING_STATE}
    return module.to(device).eval(), info


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu"
                   ) -> tuple[nn.Module, dict]:
    """The generator stored in a final generator file or a training checkpoint, in eval mode."""
    from lipsync.models import registry

    return load_network(path, "generator", lambda state: registry.build(
        state["model"], state["model_options"]).generator, device)
