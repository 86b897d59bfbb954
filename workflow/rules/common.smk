"""Helpers and target lists shared by all rule files (speakers, shards, options, code hashes)."""

import hashlib
import json
import math
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")


def _package_folder():
    """The lipsync source the jobs run: the checkout's, else the installed package's."""
    # workflow.basedir is workflow/, beside the checkout's lipsync/
    checkout = Path(workflow.basedir).parent / "lipsync"
    if checkout.is_dir():
        return checkout
    import importlib.util

    spec = importlib.util.find_spec("lipsync")
    if spec is None or not spec.submodule_search_locations:
        raise WorkflowError(
            "cannot find the lipsync package: install it (pip install -e .)"
        )
    return Path(list(spec.submodule_search_locations)[0])


PACKAGE = _package_folder()
SPLITS = ["small", "full", "test"]
NO_VIDEO_SPEAKERS = {"s21"}  # GRID speaker 21 was recorded without video


def _speakers():
    wanted = config["data"]["speakers"]
    skipped = sorted(set(wanted) & NO_VIDEO_SPEAKERS)
    if skipped:
        logger.info(f"Speakers without video in GRID, excluded: {', '.join(skipped)}")
    return [s for s in wanted if s not in NO_VIDEO_SPEAKERS]


SPEAKERS = _speakers()


def options(*keys, **extra):
    """JSON of the named config sections (plus extra values): what a rule passes as `params`.

    Snakemake compares params between runs, so a rule reruns exactly when a section it uses changes.
    """
    chosen = {key: config[key] for key in keys}
    chosen.update(extra)
    return json.dumps(chosen, sort_keys=True)


def section(*path):
    value = config
    for key in path:
        value = value[key]
    return json.dumps(value, sort_keys=True)


def code_hash(*modules):
    """sha256 over the source of the given lipsync modules (paths relative to lipsync/).

    Snakemake does not see edits to package code; this param makes an edit rerun exactly the jobs
    that run the edited module. A folder name hashes every .py file below it.
    """
    digest = hashlib.sha256()
    for module in ("errors.py", "io.py") + modules:
        path = PACKAGE / module
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(PACKAGE)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# --- corpus layout -------------------------------------------------------------------------------


def corpus_root():
    source = config["data"]["source"]
    if source == "local":
        root = config["data"]["local"]["root"]
        if not root:
            raise WorkflowError("data.source is 'local' but data.local.root is not set")
        return root
    return f"results/corpus/{source}"


def local_clips(speaker):
    """Clip ids of a speaker in a local corpus, listed at DAG-build time (a directory listing)."""
    from lipsync.data import local

    clips = [
        entry.clip
        for entry in local.find_clips(
            speaker, corpus_root(), audio=config["data"]["audio"]
        )
    ]
    limit = config["data"]["max_clips_per_speaker"]
    return clips[:limit] if limit else clips


def clip_count(speaker):
    if config["data"]["source"] == "local":
        return len(local_clips(speaker))
    count = config["data"]["clips_per_speaker"]
    limit = config["data"]["max_clips_per_speaker"]
    return min(count, limit) if limit else count


def shards(speaker):
    size = config["data"]["shard_size"]
    return (
        [0] if size == 0 else list(range(max(1, math.ceil(clip_count(speaker) / size))))
    )


def shard_files(pattern):
    """Every speaker shard's file for a pattern with {speaker} and {shard}."""
    return [pattern.format(speaker=s, shard=k) for s in SPEAKERS for k in shards(s)]


# --- training runs and targets -------------------------------------------------------------------


def runs():
    return config["training"]["runs"]


def run_options(run):
    """Training options of one run: shared options, the model's options, then the run's overrides."""
    spec = dict(runs()[run])
    model = spec.pop("model")
    spec.pop("train_set")
    model_keys = set(config["training"]["models"].get(model, {}))
    model_options = dict(config["training"]["models"].get(model, {}))
    loop_options = dict(config["training"]["options"])
    for key, value in spec.items():
        if key == "model_options":
            model_options.update(value)
        elif key in model_keys:
            model_options[key] = value
        else:
            loop_options[key] = value
    return json.dumps(
        {"model": model, "model_options": model_options, **loop_options}, sort_keys=True
    )


def evaluated_runs():
    return ["identity"] + list(runs())


def fid_weights():
    fid = config["evaluate"]["fid"]
    return [] if fid["random_weights"] else [fid["weights"]]


def s3fd_weights():
    faces = config["faces"]
    return [faces["s3fd_weights"]] if faces["detector"] == "s3fd" else []


def all_targets():
    return (
        expand(
            "results/tables/{table}.md", table=["fid", "ssim_psnr", "dataset_impact"]
        )
        + ["results/figures/qualitative.png", "results/figures/distributions.png"]
        + expand("results/figures/contact_sheet_{split}.png", split=["test"])
        + expand("results/generated/{run}.png", run=evaluated_runs())
    )
