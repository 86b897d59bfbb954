"""Helpers and target lists shared by all rule files (speakers, shards, options, code hashes)."""

import functools
import hashlib
import json
import math
import os
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The schema is generated from the Option tables of the modules that use each section (over the
# structure in ../schemas/config.schema.yaml); it fills in every default. Then what a schema
# cannot say (run overrides, model input shapes, relations between audio settings). Both fail
# before planning with the key named as a config path (video.fps: 0: must be greater than 0).
from lipsync.core.config import check_config, run_options as _run_options
from lipsync.core.config_schema import validate as validate_config

validate_config(config)
check_config(config)


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


# Read by download_s3fd, never by a faces job: kept out of its params, so a new URL reruns nothing.
S3FD_DOWNLOAD_KEYS = ("s3fd_url", "s3fd_sha256")


def faces_options():
    """JSON of the faces and video options a faces job reads."""
    faces = {k: v for k, v in config["faces"].items() if k not in S3FD_DOWNLOAD_KEYS}
    if faces["detector"] != "s3fd":
        del faces["s3fd_weights"]
    return json.dumps({"faces": faces, "video": config["video"]}, sort_keys=True)


# --- code hashes: what each lipsync command runs (lipsync.core.codehash) ----------------------------


@functools.cache
def _cached_code_hash(command, extra_modules):
    from lipsync.core import codehash

    try:
        return codehash.code_hash(PACKAGE, command, extra_modules)
    except codehash.UnknownCommand as error:
        # The job will fail when it runs; until then hash everything, so no edit goes unseen.
        logger.warning(f"{error}, which a rule runs")
        return codehash.code_hash(PACKAGE, None, codehash.every_module(PACKAGE))


def code_hash(command, extra_modules=()):
    """Hash of the meaning of what `lipsync <command>` runs (plus `extra_modules`, e.g. the
    metric a scoring job runs): a rule's `code` param. Snakemake does not see edits to package
    code; this param reruns exactly the jobs whose code changed, and a comment or docstring
    edit reruns none.
    """
    return _cached_code_hash(command, tuple(extra_modules))


# --- corpus layout -------------------------------------------------------------------------------


def corpus_root():
    source = config["data"]["source"]
    if source == "local":
        root = config["data"]["local"]["root"]
        if not root:
            raise WorkflowError("data.source is 'local' but data.local.root is not set")
        return root
    return f"results/corpus/{source}"


@functools.cache
def _local_entries(speaker):
    """A speaker's clips in a local corpus, listed once at DAG-build time (a directory listing)."""
    from lipsync.data import local

    entries = local.find_clips(speaker, corpus_root(), audio=config["data"]["audio"])
    limit = config["data"]["max_clips_per_speaker"]
    return entries[:limit] if limit else entries


def local_clips(speaker):
    """Clip ids of a speaker in a local corpus."""
    return [entry.clip for entry in _local_entries(speaker)]


def shard_fingerprint(speaker, shard, kind):
    """sha256 of (name, size, mtime_ns) of the `kind` files ("video" or "audio") that one shard's
    job reads from a local corpus: a rule's param, so a clip replaced in place under the same name
    reruns its shard. Other sources write their corpus through rules, which Snakemake tracks.
    """
    if config["data"]["source"] != "local":
        return ""
    entries = _local_entries(speaker)
    size = config["data"]["shard_size"]
    if size:
        entries = entries[int(shard) * size : (int(shard) + 1) * size]
    digest = hashlib.sha256()
    for entry in entries:
        path = entry.video if kind == "video" else (entry.audio or entry.video)
        stat = os.stat(path)
        digest.update(f"{Path(path).name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


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
    # Overrides go to the model by its option table (lipsync.core.config.run_options).
    return json.dumps(_run_options(config, run), sort_keys=True)


from lipsync.report.tables import TABLES

# Systems without a generator (lipsync.tools.generate.BASELINES).
BASELINES = ["real", "identity"]


def evaluated_runs():
    """Every system scored: the real faces, the identity copy and each training run."""
    return BASELINES + list(runs())


def snapshot_systems():
    """{run}@{k}: the snapshot generators of every run (training.options.snapshots)."""
    return [
        f"{run}@{k}"
        for run in runs()
        for k in range(1, json.loads(run_options(run)).get("snapshots", 0) + 1)
    ]


def generator_file(system):
    """What generating a system reads: nothing (baselines), a run's generator, or the folder
    of a run's snapshots ({run}@{k})."""
    if system in BASELINES:
        return []
    run, _, k = system.partition("@")
    return f"results/train/{run}/progress" if k else f"results/train/{run}/generator.pt"


def generator_argument(system):
    run, _, k = system.partition("@")
    if system in BASELINES:
        return system
    return f"results/train/{run}/progress/{k}.pt" if k else generator_file(system)


def defect_systems():
    """Defect sets of the sensitivity study (lipsync.analysis.defects), as scored system names."""
    return [
        f"defect-{kind}-{float(strength):g}"
        for kind, strengths in config["analysis"]["defects"].items()
        for strength in strengths
    ]


def analysed_systems():
    """Every system the agreement study ranks: baselines, runs and defect sets."""
    return evaluated_runs() + snapshot_systems() + defect_systems()


def _metric_registry():
    from lipsync.metrics import registry

    registry.load()
    return registry


_metric_registry().check(config["evaluate"])


def metric_inputs():
    """Files the configured metrics read (Inception weights, an expert checkpoint, ...)."""
    return _metric_registry().input_files(config["evaluate"], SPEAKERS)


def scored_metrics():
    """The configured metrics (evaluate.metrics), in order: one scoring job each per system."""
    return [metric.name for metric in _metric_registry().configured(config["evaluate"])]


def _reference_source(metric):
    source = _metric_registry().reference_source(_metric_registry().get(metric))
    return source.name if source else None


def metric_input_files(metric):
    """Files one metric reads (weights, an expert checkpoint), its reference source's too."""
    return _metric_registry().input_files(
        {**config["evaluate"], "metrics": [metric]}, SPEAKERS
    )


def metric_reference_file(metric):
    """The reference data a metric's scoring reads ([] if none)."""
    source = _reference_source(metric)
    return [f"results/metrics/reference/{source}.npz"] if source else []


def metric_options(metric):
    """JSON of what scoring or referencing one metric reads: its evaluate.<metric> section, the
    section of the metric whose reference data it reads (KID reads FID's), and the shared
    batch_size, device and bootstrap; never the list of metrics, so adding one reruns no other.
    """
    evaluate = config["evaluate"]
    sections = {metric, _reference_source(metric) or metric}
    chosen = {name: evaluate.get(name, {}) for name in sections}
    shared = ("batch_size", "device", "bootstrap")
    chosen.update({key: evaluate[key] for key in shared if key in evaluate})
    return json.dumps(chosen, sort_keys=True)


def metric_modules(metrics):
    """The modules that define `metrics` and the metrics whose reference data they read: what a
    job imports by a metric's name, beyond the imports code_hash follows by itself."""
    registry = _metric_registry()
    modules = set()
    for name in metrics:
        modules.add(registry.get(name).__module__)
        source = _reference_source(name)
        if source:
            modules.add(registry.get(source).__module__)
    return sorted(modules)


def metric_code_hash(command, metric):
    """code_hash of a job that runs one metric: the command's code and that metric's module."""
    return code_hash(command, metric_modules([metric]))


def s3fd_weights():
    faces = config["faces"]
    return [faces["s3fd_weights"]] if faces["detector"] == "s3fd" else []


def all_targets():
    return (
        expand("results/tables/{table}.md", table=TABLES)
        + ["results/tables/sensitivity.md", "results/tables/agreement.md"]
        + ["results/figures/qualitative.png", "results/figures/distributions.png"]
        + expand("results/figures/contact_sheet_{split}.png", split=["test"])
        + expand("results/generated/{run}.png", run=evaluated_runs())
        + expand(
            "results/dubbed/{name}.png",
            name=[p["name"] for p in config["dub"]["pairs"]],
        )
    )


def external_summaries():
    """Summaries of the systems in evaluate.external (rule score_external), read by the tables
    beside the runs'."""
    return expand(
        "results/metrics/external-{name}/summary.json",
        name=config["evaluate"]["external"],
    )


# --- dubbing (rule dub) and other systems' videos (rule score_external) ----------------------


def _media_input(text):
    """The file a pair's face or audio names: SPEAKER:N is clip N of that speaker's corpus
    manifest (clip names of the synthetic corpus exist only once its manifest does)."""
    match = re.fullmatch(r"(s[0-9]+):([0-9]+)", text)
    return f"results/corpus/{match.group(1)}.tsv" if match else text


def _media_argument(text):
    """What `lipsync dub` takes for it: the file, or MANIFEST.tsv:N."""
    match = re.fullmatch(r"(s[0-9]+):([0-9]+)", text)
    return f"{_media_input(text)}:{match.group(2)}" if match else text


DUB_PAIRS = {pair["name"]: pair for pair in config["dub"]["pairs"]}


def dub_options():
    """JSON of the faces, audio and dub options a dub job reads (not the list of pairs)."""
    faces = {k: v for k, v in config["faces"].items() if k not in S3FD_DOWNLOAD_KEYS}
    dub = {k: v for k, v in config["dub"].items() if k != "pairs"}
    return json.dumps(
        {"faces": faces, "audio": config["audio"], "dub": dub}, sort_keys=True
    )


def _generator(run):
    return [] if run == "identity" else [f"results/train/{run}/generator.pt"]


EXTERNAL = config["evaluate"]["external"]


def external_options():
    """JSON of what score-videos reads: the preprocessing and the metrics, not the list of
    external systems (adding one reruns nothing else)."""
    faces = {k: v for k, v in config["faces"].items() if k not in S3FD_DOWNLOAD_KEYS}
    evaluate = {k: v for k, v in config["evaluate"].items() if k != "external"}
    return json.dumps(
        {"faces": faces, "audio": config["audio"], "evaluate": evaluate}, sort_keys=True
    )


def _folder_fingerprint(folder):
    """(name, size, mtime_ns) of a folder's files: Snakemake does not track files inside a
    folder that no rule made, so a replaced video reruns its scoring through this param.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        stat = path.stat()
        digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# --- a rerun after a killed snakemake -------------------------------------------------------------


def _hold_run_lock():
    """Clear the locks of a killed snakemake (lipsync.core.stale_locks) and keep the run lock."""
    from snakemake.settings.types import ExecMode
    from lipsync.core.stale_locks import hold_run_lock

    if workflow.exec_mode != ExecMode.DEFAULT:
        return None  # the snakemake inside a cluster job: the main one owns the locks
    return hold_run_lock(".snakemake", warn=logger.warning)


_RUN_LOCK = _hold_run_lock()  # held open as long as this snakemake runs
