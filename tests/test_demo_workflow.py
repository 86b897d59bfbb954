"""The demo DAG end to end, then what Snakemake plans after each kind of change, and killed jobs.

One complete demo run (module fixture) is shared by every test here; each change test only asks
Snakemake for its plan (`-n`) and undoes its change.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import rerun_plans
import yaml
from rerun_plans import DEFAULT_METRICS
from test_workflow import planned_jobs

from lipsync.report.tables import TABLES
from lipsync.tools.generate import BASELINES

REPO = Path(__file__).resolve().parents[1]
DEMO = "config/demo.yaml"
PREPROCESSING = {"synthesize", "scan_local", "faces", "mels", "splits", "pack"}
pytestmark = pytest.mark.slow


# The suite's demo: every rule of the README's demo, with less of each (fewer defect sets, CSIM on
# one frame per clip, the generators' few plumbing steps), so the whole suite stays well inside
# its time budget on 2 cores. The README's demo itself is config/demo.yaml unchanged.
SUITE_DEMO = {
    "training": {"runs": {"lipgan-small": {"snapshots": 1}, "wgan_gp-full": {"snapshots": 1}},
                 "options": {"batch_size": 8, "total_samples": 96, "checkpoint_every_samples": 48,
                             "validation_every_samples": 48, "validation_samples": 16,
                             "snapshots": 1},
                 "models": {"lipgan": {"width": 0.125}, "l1wgan_gp": {"width": 0.125, "n_critic": 2},
                            "wgan_gp": {"width": 0.125, "n_critic": 2}}},
    # Each scored system costs one job per metric: the suite's demo scores the paper's and the
    # earlier sessions' seven (rerun_plans.DEFAULT_METRICS); the README's demo scores every one.
    "evaluate": {"csim": {"frames_per_clip": 1}, "metrics": DEFAULT_METRICS},
    "syncnet": {"training": {"total_samples": 640, "validation_every_samples": 320,
                             "checkpoint_every_samples": 320}},
    "analysis": {"defects": {"desync": [2], "blur": [2]}},
}


def _merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (_merged(base[key], value) if isinstance(value, dict)
                    and isinstance(base.get(key), dict) else value)
    return out


def _copy_project(destination: Path) -> Path:
    destination.mkdir(parents=True)
    for name in ("config.yaml", "config", "workflow", "envs", "lipsync"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / name)
    demo = destination / DEMO
    config = _merged(yaml.safe_load(demo.read_text()), SUITE_DEMO)
    config["analysis"]["defects"] = SUITE_DEMO["analysis"]["defects"]  # these kinds only
    demo.write_text(yaml.safe_dump(config))
    return destination


def _environment(project: Path) -> dict:
    # Jobs import the project copy's package, so an edit there is what they run.
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(project)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_snakemake(project: Path, *args: str, configfiles=(DEMO,), timeout=3600,
                  check=True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", *args, "--cores", "2",
               "--configfile", *configfiles]
    result = subprocess.run(command, cwd=project, env=_environment(project), capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


def plan(project: Path, *targets: str, configfiles=(DEMO,)) -> dict[str, int]:
    result = run_snakemake(project, *targets, "-n", configfiles=configfiles, timeout=300)
    return planned_jobs(result.stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    project = _copy_project(tmp_path_factory.mktemp("demo") / "project")
    run_snakemake(project)
    return project


def test_demo_runs_the_whole_dag(demo):
    results = demo / "results"
    for split in ("small", "full", "test"):
        with h5py.File(results / "datasets" / f"{split}.h5") as dataset:
            assert len(dataset["samples/crop"]) > 0
    with h5py.File(results / "datasets" / "test.h5") as test_set:
        n_samples = len(test_set["samples/crop"])
        assert (test_set["samples/reference"][:] >= 0).all()
    runs = tuple(yaml.safe_load((demo / DEMO).read_text())["training"]["runs"])
    for run in runs:
        assert (results / "train" / run / "generator.pt").exists()
    for run in (*BASELINES, *runs):
        with h5py.File(results / "generated" / f"{run}.h5") as generated:
            assert generated["faces"].shape == (n_samples, 96, 96, 3)
        summary = json.loads((results / "metrics" / run / "summary.json").read_text())
        assert summary
    assert (results / "tables" / "summary.md").stat().st_size > 0
    for table in TABLES:
        for extension in ("csv", "md", "tex"):
            assert (results / "tables" / f"{table}.{extension}").stat().st_size > 0
    assert (results / "figures" / "qualitative.png").stat().st_size > 0
    assert (results / "figures" / "distributions.png").stat().st_size > 0


def test_demo_scores_every_configured_metric_for_every_system(demo):
    from lipsync.metrics import registry

    config = yaml.safe_load((demo / DEMO).read_text())
    metrics = [m.name for m in registry.configured(config.get("evaluate"))]
    systems = [*BASELINES, "lipgan-full", "lipgan-full@1", "defect-desync-2", "defect-blur-2"]
    for system in systems:
        summary = json.loads((demo / "results" / "metrics" / system / "summary.json").read_text())
        assert sorted(summary["metrics"]) == sorted(metrics), system
        for name, metric in summary["metrics"].items():
            assert metric["failed"] is None, (system, name, metric["failed"])
    real = json.loads((demo / "results" / "metrics" / "real" / "summary.json").read_text())
    assert real["metrics"]["ssim"]["columns"]["ssim"]["value"] == 1.0
    if "lmd" in metrics:
        assert real["metrics"]["lmd"]["columns"]["lmd"]["value"] == 0.0
    for output in ("tables/sensitivity.md", "tables/agreement.md", "figures/sensitivity.png",
                   "figures/agreement.png", "figures/disagreement.png", "figures/progress.png"):
        assert (demo / "results" / output).stat().st_size > 0, output


def test_report_collects_tables_and_figures(demo):
    run_snakemake(demo, "--report", "report.html", timeout=300)
    html = (demo / "report.html").read_text(errors="replace")
    assert "qualitative.png" in html and f"{TABLES[0]}.md" in html


# --- incremental reruns --------------------------------------------------------------------------


def test_a_second_run_plans_nothing(demo):
    assert plan(demo) == {}


def _extra_config(project: Path, name: str, values: dict) -> str:
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path.name


# --- what reruns when you change X (docs/reruns.md is made from these plans) ----------------------


def all_plans(project: Path) -> tuple[dict[str, list[rerun_plans.Job]], dict[str, int]]:
    """The plan after each change of rerun_plans.CHANGES on a finished demo, and the job count
    of every rule when everything runs."""
    plans = {}
    for key, change in rerun_plans.CHANGES.items():
        configfiles = (DEMO, _extra_config(project, key, change.config)) if change.config else (
            DEMO,)
        with rerun_plans.edited(project / "lipsync", change.edit):
            result = run_snakemake(project, "-n", configfiles=configfiles, timeout=300)
        plans[key] = rerun_plans.planned(result.stdout)
    everything = planned_jobs(run_snakemake(project, "-n", "--forceall", timeout=300).stdout)
    return plans, everything


@pytest.fixture(scope="module")
def reruns(demo):
    return all_plans(demo)


def _rules(jobs: list[rerun_plans.Job]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    return counts


def _metrics(jobs: list[rerun_plans.Job], rule: str) -> set[str]:
    return {job.wildcards["metric"] for job in jobs if job.rule == rule}


# What reads the metric results, and so reruns when one metric is rescored.
METRIC_READERS = {"merge_scores", "tables", "figures", "sensitivity", "agreement"}
UPSTREAM_OF_SCORING = PREPROCESSING | {"contact_sheet", "train", "train_syncnet", "generate",
                                       "defect", "dub"}


def test_a_docstring_or_comment_anywhere_in_lipsync_plans_no_job(reruns):
    plans, _ = reruns
    assert plans["docstrings"] == []


def test_a_metric_modules_code_rescores_only_that_metric_and_what_reads_its_results(reruns):
    plans, everything = reruns
    jobs = _rules(plans["metric_module"])
    assert _metrics(plans["metric_module"], "score_metric") == {"kid"}
    assert jobs["score_metric"] == everything["merge_scores"]  # KID of every system
    # No training, generation, expert, preprocessing, nor FID's reference data KID reads.
    forbidden = UPSTREAM_OF_SCORING | {"metric_reference"}
    assert set(jobs) <= METRIC_READERS | {"score_metric"}
    assert not set(jobs) & forbidden


def test_a_metrics_options_rescore_only_that_metric_and_what_reads_its_results(reruns):
    plans, everything = reruns
    jobs = _rules(plans["metric_options"])
    assert _metrics(plans["metric_options"], "score_metric") == {"csim"}
    assert jobs["score_metric"] == everything["merge_scores"]
    assert _metrics(plans["metric_options"], "metric_reference") <= {"csim"}
    assert set(jobs) <= METRIC_READERS | {"score_metric", "metric_reference"}
    assert not set(jobs) & UPSTREAM_OF_SCORING


def test_a_new_metric_scores_only_itself_then_merges_tables_figures_and_studies(reruns):
    plans, everything = reruns
    jobs = _rules(plans["new_metric"])
    assert _metrics(plans["new_metric"], "score_metric") == {"brightness"}
    assert jobs["score_metric"] == jobs["merge_scores"] == everything["merge_scores"]
    assert set(jobs) <= METRIC_READERS | {"score_metric"}  # no metric_reference: it has none
    assert not set(jobs) & UPSTREAM_OF_SCORING


def test_a_removed_metric_rescores_nothing(reruns):
    plans, _ = reruns
    jobs = _rules(plans["removed_metric"])
    assert set(jobs) <= METRIC_READERS and "merge_scores" in jobs
    assert not set(jobs) & (UPSTREAM_OF_SCORING | {"score_metric", "metric_reference"})


def test_a_models_options_rerun_that_models_runs_and_their_downstream_only(reruns):
    plans, everything = reruns
    jobs = _rules(plans["model_options"])
    assert {j.wildcards["run"] for j in plans["model_options"] if j.rule == "train"} == {
        "l1wgan_gp-full"}
    generated = {j.wildcards["run"] for j in plans["model_options"] if j.rule == "generate"}
    assert generated == {"l1wgan_gp-full", "l1wgan_gp-full@1"}  # the final one and its snapshot
    scored = {j.wildcards["run"] for j in plans["model_options"] if j.rule == "score_metric"}
    assert scored == generated and jobs["score_metric"] == 2 * len(DEFAULT_METRICS)
    forbidden = PREPROCESSING | {"train_syncnet", "defect", "metric_reference", "dub"}
    assert not set(jobs) & forbidden


def test_one_runs_options_rerun_that_run_and_its_downstream_only(reruns):
    plans, _ = reruns
    trained = {j.wildcards["run"] for j in plans["one_run"] if j.rule == "train"}
    assert trained == {"lipgan-small"}
    assert not set(_rules(plans["one_run"])) & (PREPROCESSING | {"train_syncnet", "defect",
                                                                 "metric_reference"})


def test_the_docs_table_is_what_snakemake_plans(reruns):
    made = rerun_plans.table(*reruns)
    assert rerun_plans.documented_table() == made, (
        "docs/reruns.md's table differs from the plans; rewrite it with "
        "`python tests/rerun_plans.py PROJECT` on a finished demo, or paste:\n" + made)


def test_face_padding_plans_faces_and_downstream_but_no_download(demo):
    extra = _extra_config(demo, "padding", {"faces": {"padding": {"top": 0.1}}})
    jobs = plan(demo, configfiles=(DEMO, extra))
    assert "synthesize" not in jobs and "mels" not in jobs
    assert jobs["faces"] == 4  # two speakers x two shards
    assert jobs["pack"] == 3 and jobs["train"] == 4
    # the baselines, four final generators and their four snapshots
    assert jobs["generate"] == len(BASELINES) + 4 + 4
    assert jobs["merge_scores"] >= jobs["generate"] and jobs["score_metric"] >= jobs["generate"]
    assert jobs["splits"] == 1 and jobs["metric_reference"] >= 1


def _plan_after_editing(project: Path, module: str) -> dict[str, int]:
    path = project / "lipsync" / module
    original = path.read_text()
    path.write_text(original + "\n_EDIT = 1  # a real change: a comment alone would plan nothing\n")
    try:
        return plan(project)
    finally:
        path.write_text(original)


def test_an_edited_module_plans_the_jobs_that_run_it_and_their_dependents(demo):
    jobs = _plan_after_editing(demo, "data/audio.py")
    assert jobs["mels"] == 4
    assert "faces" not in jobs and "synthesize" not in jobs
    assert jobs["splits"] == 1 and jobs["pack"] == 3 and jobs["train"] == 4
    jobs = _plan_after_editing(demo, "report/tables.py")
    assert jobs["tables"] == 1
    assert not set(jobs) & (PREPROCESSING | {"train", "generate", "score_metric", "merge_scores"})


def test_one_more_speaker_plans_only_its_preprocessing_and_the_aggregates(demo):
    extra = _extra_config(demo, "speaker", {"data": {"speakers": ["s1", "s2", "s3"]}})
    jobs = plan(demo, configfiles=(DEMO, extra))
    assert jobs["synthesize"] == 1 and jobs["faces"] == 2 and jobs["mels"] == 2
    assert jobs["splits"] == 1 and jobs["pack"] == 3


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory) -> tuple[Path, str]:
    """The demo's synthetic clips as a `local` corpus (mirror layout), preprocessed up to the
    datasets once (no training or scoring: the preprocessing tests need none)."""
    project = _copy_project(tmp_path_factory.mktemp("local") / "project")
    run_snakemake(project, "results/corpus/s1.tsv", "results/corpus/s2.tsv", timeout=300)
    corpus = project.parent / "corpus"
    shutil.copytree(project / "results" / "corpus" / "synthetic", corpus)
    extra = _extra_config(project, "local", {"data": {"source": "local",
                                                      "local": {"root": str(corpus)}}})
    targets = [f"results/datasets/{split}.h5" for split in ("small", "full", "test")]
    run_snakemake(project, *targets, configfiles=(DEMO, extra))
    return project, extra


def test_one_more_clip_plans_only_its_speakers_preprocessing_and_the_aggregates(local_corpus):
    project, extra = local_corpus
    corpus = project.parent / "corpus"
    clips = sorted((corpus / "s2").glob("*.mpg"))
    new_clip = clips[0].with_name("sgbz9n.mpg")
    shutil.copy2(clips[0], new_clip)
    alignment = corpus / "alignments" / "s2" / f"{clips[0].stem}.align"
    new_alignment = alignment.with_name("sgbz9n.align")
    shutil.copy2(alignment, new_alignment)
    try:
        targets = [f"results/datasets/{split}.h5" for split in ("small", "full", "test")]
        jobs = plan(project, *targets, configfiles=(DEMO, extra))
    finally:
        new_clip.unlink()
        new_alignment.unlink()
    # s2 now has 9 clips: three shards of 4, all rerun as the speaker's manifest changed.
    assert jobs["scan_local"] == 1
    assert jobs["faces"] == jobs["mels"] == 3
    assert jobs["splits"] == 1 and jobs["pack"] == 3


def test_a_new_s3fd_download_address_plans_no_faces_job(local_corpus):
    # Only the download rule reads the address; the demo's OpenCV faces need no weights at all.
    project, extra = local_corpus
    url = _extra_config(project, "s3fd_url", {"faces": {"s3fd_url": "https://example.org/s.pth"}})
    targets = [f"results/datasets/{split}.h5" for split in ("small", "full", "test")]
    assert plan(project, *targets, configfiles=(DEMO, extra, url)) == {}
    padding = _extra_config(project, "padding", {"faces": {"padding": {"top": 0.1}}})
    assert plan(project, *targets, configfiles=(DEMO, extra, padding))["faces"] == 4


def test_a_clip_replaced_in_place_plans_only_its_shard_and_the_aggregates(local_corpus):
    project, extra = local_corpus
    clips = sorted((project.parent / "corpus" / "s2").glob("*.mpg"))
    replaced = clips[5]  # shard 1 of s2 (shards of 4 clips)
    original = project.parent / "original.mpg"
    shutil.copy2(replaced, original)
    shutil.copyfile(clips[0], replaced)  # same name, other content
    try:
        targets = [f"results/datasets/{split}.h5" for split in ("small", "full", "test")]
        jobs = plan(project, *targets, configfiles=(DEMO, extra))
    finally:
        shutil.copy2(original, replaced)  # content and mtime back as they were
    # The manifest lists the same paths, so it stays; that shard's faces and mels rerun.
    assert "scan_local" not in jobs
    assert jobs["faces"] == jobs["mels"] == 1
    assert jobs["splits"] == 1 and jobs["pack"] == 3


# --- faults ---------------------------------------------------------------------------------------


def test_a_corpus_root_with_a_space_and_an_accent_runs_scan_faces_and_mels(tmp_path, grid_samples):
    project = _copy_project(tmp_path / "project")
    corpus = tmp_path / "my corpus é"
    (corpus / "s1").mkdir(parents=True)
    clips = sorted(grid_samples.glob("*.mpg"))[:2]
    for clip in clips:
        shutil.copy2(clip, corpus / "s1" / clip.name)
    extra = _extra_config(project, "spaces", {
        "data": {"source": "local", "speakers": ["s1"], "shard_size": 0,
                 "local": {"root": str(corpus)}}})
    run_snakemake(project, "results/faces/s1/0.h5", "results/mels/s1/0.h5",
                  configfiles=(DEMO, extra), timeout=600)
    manifest = (project / "results" / "corpus" / "s1.tsv").read_text(encoding="utf-8")
    assert str(corpus / "s1" / clips[0].name) in manifest
    coverage = (project / "results" / "faces" / "s1" / "0.coverage.tsv").read_text()
    assert sorted(line.split("\t")[1] for line in coverage.splitlines()[1:]) == [
        clip.stem for clip in clips]
    with h5py.File(project / "results" / "mels" / "s1" / "0.h5") as mels:
        assert sorted(mels["clips"]) == [clip.stem for clip in clips]


def test_a_killed_snakemake_is_followed_by_a_plain_rerun_that_recovers(tmp_path):
    """kill -9 of snakemake (and its job) mid-job leaves Snakemake's locks and an incomplete
    output behind; the README's command, run again, clears both by itself (the local profile's
    rerun-incomplete, and the workflow's stale-lock check)."""
    project = _copy_project(tmp_path / "project")
    target = "results/faces/s1/0.h5"
    run_snakemake(project, "results/corpus/s1.tsv", timeout=300)
    command = [sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", DEMO]
    process = subprocess.Popen(command, cwd=project, env=_environment(project),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (project / "results" / "logs" / "faces" / "s1" / "0.log").exists():
            assert process.poll() is None, "snakemake ended before the faces job started"
            assert time.monotonic() < deadline, "the faces job did not start within 120 s"
            time.sleep(0.2)
        time.sleep(1)
        assert process.poll() is None, "the faces job ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    state = project / ".snakemake"
    assert list((state / "locks").iterdir()), "the killed snakemake left no locks to recover from"
    assert list((state / "incomplete").iterdir())
    assert not (project / target).exists()

    result = run_snakemake(project, target, timeout=600)
    assert "Using workflow specific profile workflow/profiles/default" in result.stderr
    assert "Removing the locks of a snakemake that was killed" in result.stderr
    assert (project / target).exists()
    assert not list((project / target).parent.glob(".0.h5.*.tmp"))  # the killed job's temporary
    assert plan(project, target) == {}


def test_killed_training_job_leaves_no_output_and_resumes_from_its_checkpoint(demo):
    extra = _extra_config(demo, "long", {
        "training": {"runs": {"lipgan-long": {"model": "lipgan", "train_set": "small",
                                              "total_samples": 100000,
                                              "checkpoint_every_samples": 16}}}})
    target = "results/train/lipgan-long/generator.pt"
    run_dir = demo / "results" / "train" / "lipgan-long"
    command = [sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", DEMO,
               extra]
    process = subprocess.Popen(command, cwd=demo, env=_environment(demo),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((run_dir / "checkpoints").glob("*.pt")):
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(1)
        time.sleep(3)
        os.killpg(process.pid, signal.SIGTERM)
        time.sleep(5)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        process.wait(timeout=60)
    assert not (run_dir / "generator.pt").exists()
    assert not list(run_dir.glob(".generator.pt.*"))
    saved = sorted((run_dir / "checkpoints").glob("*.pt"))
    assert saved

    # No --unlock first: the rerun clears what the killed snakemake left (see the test above).
    # The rerun finishes a shorter budget from the checkpoint rather than starting over.
    short = _extra_config(demo, "long", {
        "training": {"runs": {"lipgan-long": {"model": "lipgan", "train_set": "small",
                                              "total_samples": 64,
                                              "checkpoint_every_samples": 16}}}})
    result = run_snakemake(demo, target, configfiles=(DEMO, short), timeout=600)
    log = (demo / "results" / "logs" / "train" / "lipgan-long.log").read_text()
    assert "resumed from" in log, result.stderr[-3000:]
    assert (run_dir / "generator.pt").exists()
