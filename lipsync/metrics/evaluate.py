"""Score one generated test set: FID against cached reference statistics, per-frame SSIM and PSNR.

Outputs `metrics/{run}/scores.tsv` (sample, speaker, clip, frame, ssim, psnr; psnr `inf` for a
frame identical to its ground truth) and `metrics/{run}/summary.json` (FID with N, SSIM and PSNR
mean/median/max/min over finite values, each metric's protocol, flags, labels and warnings).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from lipsync.errors import InputError
from lipsync.io import write_json, write_tsv
from lipsync.logs import get_logger
from lipsync.metrics import fid, registry, ssim_psnr
from lipsync.metrics.testset import GeneratedSet, TestSet, batches
from lipsync.progress import progress
from lipsync.provenance import describe

log = get_logger(__name__)


def _check_reference(reference: fid.ReferenceStatistics, path, current: dict, n: int) -> None:
    if reference.protocol.get("key") != current["key"]:
        raise InputError(path, f"FID reference statistics were made under other FID settings "
                               f"(key {reference.protocol.get('key')}, the current evaluate.fid "
                               f"options give {current['key']}); rerun `lipsync fid-reference`")
    if reference.n != n:
        raise InputError(path, f"FID reference statistics cover {reference.n} images but the test "
                               f"set has {n} samples; rerun `lipsync fid-reference`")


def score_run(generated: str | os.PathLike, test_set: str | os.PathLike,
              fid_reference: str | os.PathLike, scores_tsv: str | os.PathLike,
              summary_json: str | os.PathLike, *, options: dict, threads: int = 1) -> dict:
    """Score `generated/{run}.h5` against the test set; write the TSV and JSON; return the summary.

    `options` is the config's `evaluate` section: {fid: {...}, ssim_psnr: {...}}.
    """
    torch.set_num_threads(max(1, threads))
    options = options or {}
    fid_options = fid.settings(options.get("fid"))
    pair_options = ssim_psnr.settings(options.get("ssim_psnr"))
    device = fid.default_device()

    with TestSet(test_set) as truth, GeneratedSet(generated) as output:
        n = truth.n_samples
        if output.n_samples != n:
            raise InputError(generated, f"has {output.n_samples} generated faces but the test set "
                                        f"{test_set} has {n} samples (one face per sample, in "
                                        "sample order)")
        if n and output.faces.shape[1:] != truth.image_shape:
            raise InputError(generated, f"faces are {output.faces.shape[1:]}, the test set's are "
                                        f"{truth.image_shape}")
        protocols = registry.protocols(options, n_samples=n)
        reference = fid.load_reference(fid_reference)
        _check_reference(reference, fid_reference, protocols["fid"], n)
        model = fid.build_inception(fid_options, device)

        ssim_values, psnr_values, feature_rows = [], [], []
        digest = hashlib.sha256()
        with progress(total=n, desc=f"score {output.run}", unit="frame") as bar:
            for start, stop in batches(n, pair_options["batch_size"]):
                real = truth.ground_truth(start, stop)
                fake = output.faces[start:stop]
                digest.update(np.ascontiguousarray(real).tobytes())
                ssim_batch, psnr_batch = ssim_psnr.score_pairs(fake, real, options=pair_options,
                                                               device=device)
                ssim_values.append(ssim_batch)
                psnr_values.append(psnr_batch)
                feature_rows.append(fid.features(fake, model, device, fid_options["batch_size"]))
                bar.update(stop - start)
        if digest.hexdigest() != reference.fingerprint:
            raise InputError(fid_reference, f"FID reference statistics were computed from other "
                                            f"ground-truth faces than {test_set}; rerun "
                                            "`lipsync fid-reference`")
        table = truth.sample_table()
        model_name, checkpoint, run = output.model, output.checkpoint, output.run

    table["ssim"] = np.concatenate(ssim_values)
    table["psnr"] = np.concatenate(psnr_values)
    write_tsv(scores_tsv, table)

    warnings_found = []
    small = fid.small_sample_warning(n, fid_options["dims"])
    if small:
        log.warning("%s: %s", generated, small)
        warnings_found.append(small)
    mu, sigma = fid.statistics(np.concatenate(feature_rows))
    fid_value = fid.frechet_distance(mu, sigma, reference.mu, reference.sigma)
    psnr_stats = ssim_psnr.summarize(table["psnr"].to_numpy())
    if psnr_stats["n_infinite"]:
        log.info("%s: %d frames identical to their ground truth (PSNR inf), left out of the PSNR "
                 "summary", generated, psnr_stats["n_infinite"])
    labels = fid.labels(fid_options)
    for label in labels:
        log.warning("%s: %s", generated, label)
    summary = {
        "run": run,
        "generated": str(generated),
        "test_set": str(test_set),
        "fid_reference": str(fid_reference),
        "model": model_name,
        "checkpoint": checkpoint,
        "n_samples": n,
        "fid": {"value": fid_value if np.isfinite(fid_value) else None, "n_generated": n,
                "n_reference": reference.n, "protocol": protocols["fid"]},
        "ssim": {**ssim_psnr.summarize(table["ssim"].to_numpy()), "protocol": protocols["ssim"]},
        "psnr": {**psnr_stats, "protocol": protocols["psnr"]},
        "flags": {"random_weights": bool(fid_options["random_weights"]),
                  "fid_fewer_images_than_dims": small is not None},
        "labels": labels,
        "warnings": warnings_found,
        "options": options,
        "device": str(device),
        "provenance": describe(),
    }
    write_json(summary_json, summary)
    def shown(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    log.info("%s: FID %s (N=%d), SSIM mean %s, PSNR mean %s dB", run, shown(fid_value, 4), n,
             shown(summary["ssim"]["mean"], 4), shown(psnr_stats["mean"], 2))
    return summary
