"""Helpers and target lists shared by all rule files (speakers, shards, options, code hashes)."""

import ast
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
from lipsync.config import check_config, run_options as _run_options
from lipsync.config_schema import validate as validate_config

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


# --- code hashes: what each lipsync command runs -------------------------------------------------


def _module_file(module):
    """The source file of lipsync module `module` (a dotted name), or None if it names none."""
    parts = module.split(".")
    if parts[0] != PACKAGE.name or not all(part.isidentifier() for part in parts):
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for file in (base.with_suffix(".py"), base / "__init__.py"):
        if file.is_file():
            return file
    return None


def _imported_names(tree, package):
    """Dotted names imported anywhere in `tree` (lazy imports inside functions too), and string
    constants, since the model and metric registries import their modules by name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1] + ([base] if base else [])
                base = ".".join(parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _module_closure(names):
    """name -> file of every lipsync module that importing `names` runs, package __init__s too."""
    found, pending = {}, list(names)
    while pending:
        parts = pending.pop().split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[:n])
            file = _module_file(name)
            if file is None or name in found:
                continue
            found[name] = file
            package = name if file.name == "__init__.py" else name.rpartition(".")[0]
            pending.extend(
                _imported_names(ast.parse(file.read_bytes(), str(file)), package)
            )
    return found


def _cli_function_names(functions, start):
    """Top-level functions of lipsync/cli.py reachable from `start` through the names they use."""
    seen, pending = set(), list(start)
    while pending:
        name = pending.pop()
        if name in functions and name not in seen:
            seen.add(name)
            pending.extend(
                n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)
            )
    return seen


@functools.cache
def command_code(command):
    """(cli source, {module: file}) that `lipsync <command>` runs, found statically with `ast`.

    The cli part is lipsync/cli.py without the functions of the other commands; the modules are
    every lipsync module that part imports, followed through their own imports.
    """
    cli_file = PACKAGE / "cli.py"
    source = cli_file.read_text()
    tree = ast.parse(source, str(cli_file))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    commands = {}
    for node in functions.values():
        for decorator in node.decorator_list:
            match decorator:  # @command("name", "help")(arguments_function)
                case ast.Call(
                    func=ast.Call(
                        func=ast.Name(id="command"),
                        args=[ast.Constant(value=str() as name), *_],
                    ),
                    args=[ast.Name(id=arguments)],
                ):
                    commands[name] = (node.name, arguments)
    if command not in commands:
        # The job will fail when it runs; until then hash everything, so no edit goes unseen.
        logger.warning(f"lipsync/cli.py has no command {command!r}, which a rule runs")
        everything = [
            f"{PACKAGE.name}.{'.'.join(f.relative_to(PACKAGE).with_suffix('').parts)}"
            for f in sorted(PACKAGE.rglob("*.py"))
        ]
        return source, _module_closure(everything)
    own = _cli_function_names(functions, commands[command])
    others = set().union(
        *(_cli_function_names(functions, c) for c in commands.values())
    )
    kept = [
        node
        for node in tree.body
        if not (isinstance(node, ast.FunctionDef) and node.name in others - own)
    ]
    names = [name for node in kept for name in _imported_names(node, PACKAGE.name)]
    modules = _module_closure(names)
    modules.pop(f"{PACKAGE.name}.cli", None)  # stands for itself: the kept part above
    cli_part = "\n".join(ast.get_source_segment(source, node) for node in kept)
    return cli_part, modules


def code_hash(command):
    """sha256 over what `lipsync <command>` runs (see command_code): a rule's `code` param.

    Snakemake does not see edits to package code; this param makes an edit rerun exactly the jobs
    whose command runs the edited code.
    """
    cli_part, modules = command_code(command)
    digest = hashlib.sha256(cli_part.encode())
    for name, file in sorted(modules.items()):
        digest.update(name.encode())
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
    # Overrides go to the model by its option table (lipsync.config.run_options).
    return json.dumps(_run_options(config, run), sort_keys=True)


from lipsync.report.tables import TABLES

# Systems without a generator (lipsync.generate.BASELINES).
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


def reference_metrics():
    """Metrics whose reference data (work on the real faces) the configured metrics need."""
    return _metric_registry().reference_metrics(config["evaluate"])


def metric_inputs():
    """Files the configured metrics read (Inception weights, an expert checkpoint, ...)."""
    return _metric_registry().input_files(config["evaluate"], SPEAKERS)


def reference_arguments(wildcards, input):
    return " ".join(
        f"--reference {shlex.quote(f'{name}={path}')}"
        for name, path in zip(reference_metrics(), input.references)
    )


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


def scoring_options():
    """JSON of the evaluate section a scoring job reads: all but evaluate.external (which other
    systems to score), so adding a system reruns no run's scores."""
    evaluate = {k: v for k, v in config["evaluate"].items() if k != "external"}
    return json.dumps(evaluate, sort_keys=True)


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

_RUN_LOCK = []  # the open lock file, held as long as this snakemake runs


def _clear_stale_locks():
    """Remove the locks of a snakemake that was killed (kill -9, out of memory, a lost session).

    Snakemake's own locks (.snakemake/locks) record no owner, so they outlive a killed snakemake
    and stop every rerun until `snakemake --unlock`. Each snakemake of this workflow also holds a
    shared OS lock on .snakemake/lipsync.run.lock, which the OS releases however the process ends:
    getting it exclusively means no other snakemake runs here, so Snakemake's locks are stale.
    """
    from snakemake.settings.types import ExecMode

    if workflow.exec_mode != ExecMode.DEFAULT:
        return  # the snakemake inside a cluster job: the main one owns the locks
    import fcntl
    import shutil

    state = Path(".snakemake")
    state.mkdir(exist_ok=True)
    handle = open(state / "lipsync.run.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # another snakemake runs in this directory: its locks are live
    except OSError:
        handle.close()
        return  # no OS locks on this file system: stale locks need `snakemake --unlock`
    else:
        stale = state / "locks"
        if stale.is_dir() and any(stale.iterdir()):
            logger.warning(
                f"Removing the locks of a snakemake that was killed ({stale})"
            )
            shutil.rmtree(stale)
    fcntl.flock(handle, fcntl.LOCK_SH)
    _RUN_LOCK.append(handle)


_clear_stale_locks()
