"""Run a trained generator (or the identity baseline) over the test set's fixed inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader

from lipsync.core.device import pick_device
from lipsync.core.errors import InputError
from lipsync.core.io import atomic_path
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults, resolve
from lipsync.core.progress import progress
from lipsync.core.provenance import describe

log = get_logger("lipsync.tools.generate")

OPTIONS = {
    "batch_size": Option(64, int, "Inference only: memory, not results, depends on it.",
                         minimum=1),
    "device": Option("auto", str, "\"auto\" (CUDA when present), \"cpu\" or \"cuda[:N]\"."),
    "sheet_samples": Option(8, int, "Rows of the PNG sheet (reference, real, generated), evenly "
                            "spaced.", minimum=1),
}
DEFAULTS = defaults(OPTIONS)


# Systems without a generator: the reference frame copied (the lower bound a model should beat)
# and the real target faces themselves (the upper bound, e.g. of lip-sync scores).
BASELINES = ("identity", "real")


def generate(generator: str | os.PathLike, test_set: str | os.PathLike,
             output: str | os.PathLike, *, sheet: str | os.PathLike | None = None,
             options: dict | None = None, threads: int = 1) -> dict:
    """Write HDF5 `/faces` (uint8 N x 96 x 96 x 3 RGB, the test set's sample order) from
    `generator` (a checkpoint or generator file; "identity": the stored reference frame returned
    unchanged; "real": the ground-truth face), plus an optional PNG sample sheet. Returns the attributes written."""
    from lipsync.data.dataset import LipSyncDataset

    options = resolve(OPTIONS, options, "generate")
    dataset = LipSyncDataset(test_set, fixed_reference=True)
    n, size = len(dataset), dataset.image_size
    device = pick_device(options["device"])
    batch_size = int(options["batch_size"])
    attrs = {"model": str(generator), "checkpoint": "", "test_set": str(Path(test_set).resolve()),
             "samples": n, "options": json.dumps(options, sort_keys=True),
             "provenance": json.dumps(describe(), sort_keys=True)}
    if str(generator) in BASELINES:
        model = None
    else:
        from lipsync.training.checkpoint import load_generator

        model, info = load_generator(generator, device)
        attrs.update(model=info["model"], checkpoint=str(Path(generator).resolve()),
                     model_options=json.dumps(info["model_options"], sort_keys=True),
                     trained_samples=int(info.get("samples", 0)))

    with atomic_path(output) as tmp, h5py.File(tmp, "w") as handle:
        faces = handle.create_dataset("faces", (n, size, size, 3), np.uint8,
                                      chunks=(min(max(n, 1), 64), size, size, 3))
        for key, value in attrs.items():
            handle.attrs[key] = value
        bar = progress(total=n, unit="face", desc=f"generate {attrs['model']}")
        if model is None:
            with h5py.File(test_set, "r") as source:
                targets = source["samples/crop"][()]
            for start in range(0, n, batch_size):
                indices = np.arange(start, min(start + batch_size, n))
                crops = (dataset.references(indices) if str(generator) == "identity"
                         else targets[indices])
                faces[start:start + len(indices)] = dataset.read_faces(crops)
                bar.update(len(indices))
        else:
            from lipsync.data.dataset import collate

            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                num_workers=max(0, threads - 1), collate_fn=collate,
                                pin_memory=device.type == "cuda")
            start = 0
            with torch.no_grad():
                for batch in loader:
                    fake = model(batch["generator_input"].to(device), batch["mel"].to(device))
                    images = torch.round(fake.float().clamp(0, 1) * 255).to(torch.uint8)
                    faces[start:start + len(images)] = images.permute(0, 2, 3, 1).cpu().numpy()
                    start += len(images)
                    bar.update(len(images))
            if start != n:
                raise InputError(test_set, f"read {start} of {n} samples")
        bar.close()
    if sheet is not None:
        write_sheet(test_set, output, sheet, rows=int(options["sheet_samples"]))
    log.info("wrote %d %s faces to %s", n, attrs["model"], output)
    return attrs


def write_sheet(test_set, generated, output, *, rows: int = 8) -> None:
    """PNG with one row per sample: reference, real target, generated face."""
    from lipsync.data.dataset import LipSyncDataset
    from lipsync.data.sheets import contact_sheet

    dataset = LipSyncDataset(test_set, fixed_reference=True)
    with h5py.File(generated, "r") as handle:
        n = handle["faces"].shape[0]
        if n == 0:
            raise InputError(generated, "no generated faces for a sample sheet")
        picks = np.unique(np.linspace(0, n - 1, min(rows, n)).round().astype(np.int64))
        made = handle["faces"][picks]
    with h5py.File(test_set, "r") as handle:
        crops = dataset.read_faces(handle["samples/crop"][:][picks])
    references = dataset.read_faces(dataset.references(picks))
    contact_sheet([[references[k], crops[k], made[k]] for k in range(len(picks))], output)
