"""The workflow through a real single-node SLURM cluster with the Snakemake SLURM executor plugin.

The cluster (tests/slurm_cluster.py) is started on this machine; the tests skip only where it
cannot run (not root, no Linux, apt-get failing). Proof that jobs went through the scheduler comes
from SLURM's own records: slurmctld's job list and the job completion log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from slurm_cluster import SlurmCluster, unavailable_reason

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
TRAINED = "results/train/lipgan-small/generator.pt"
# The plugin waits 40 s before its first status check by default, and a failing job would be
# retried twice (the profile's retries): seconds matter in CI.
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "1", "--retries", "0"]


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cannot run a SLURM cluster here: {reason}")
    running = SlurmCluster.start()
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(running.root, ignore_errors=True)


def snakemake_command(*args: str, timeout: int) -> list[str]:
    # The plugin ignores SIGTERM while it waits for jobs it lost track of: -k makes sure it ends.
    return ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", *args]


def workflow_env(cluster: SlurmCluster | None = None) -> dict[str, str]:
    """PATH with the venv first, so `lipsync` resolves in jobs (sbatch exports the environment)."""
    env = dict(cluster.env if cluster else os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}" \
                                   f"\n{result.stderr[-6000:]}"
    return result


def submitted_jobs(cluster: SlurmCluster, workdir: Path) -> list[dict[str, str]]:
    return [job for job in cluster.jobs() if job["WorkDir"] == str(workdir)]


def finished_rules(log: str) -> list[str]:
    """Rule of every job Snakemake reports finished, sorted."""
    return sorted(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log))


def submitted_rules(jobs: list[dict[str, str]]) -> list[str]:
    """Rule of every SLURM job, from the comment the plugin gives it (rule_<name>[_wildcards_..])."""
    return sorted(job["Comment"].removeprefix("rule_").split("_wildcards_")[0] for job in jobs)


# Both GPU rules ask for gpu=1 as the workflow's GPU rules do; the test switches ask_gres to the
# generic-resource form on the command line, as docs/slurm.md tells users of clusters without
# --gpus.
GPU_RULES = """\
rule all:
    input:
        "both.txt",


rule ask_gpus:
    output:
        "ask_gpus.txt",
    resources:
        gpu=1,
        runtime=5,
        mem_mb=100,
    shell:
        "echo $SLURM_JOB_ID $CUDA_VISIBLE_DEVICES > {output}"


rule ask_gres:
    output:
        "ask_gres.txt",
    resources:
        gpu=1,
        runtime=5,
        mem_mb=100,
    shell:
        "echo $SLURM_JOB_ID $CUDA_VISIBLE_DEVICES > {output}"


rule both:
    input:
        "ask_gpus.txt",
        "ask_gres.txt",
    output:
        "both.txt",
    threads: 2
    shell:
        "cat {input} > {output}"
"""


def test_small_workflow_runs_as_slurm_jobs_with_either_gpu_request(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(GPU_RULES)
    result = run(snakemake_command("--workflow-profile", str(PROFILE), *FAST_POLLING,
                                   "--set-resources", "ask_gres:gpu=0", "ask_gres:gres=gpu:1",
                                   timeout=180), tmp_path, workflow_env(cluster))

    jobs = {job["Comment"].removeprefix("rule_"): job
            for job in submitted_jobs(cluster, tmp_path)}
    # Every job but the target rule `all` (which Snakemake runs itself) went through SLURM.
    assert sorted(jobs) == ["ask_gpus", "ask_gres", "both"]
    assert finished_rules(result.stderr) == ["all", "ask_gpus", "ask_gres", "both"]
    assert {job["State"] for job in jobs.values()} == {"COMPLETED"}
    assert len({job["Name"] for job in jobs.values()}) == 1  # the plugin's run id
    for rule, request_field in (("ask_gpus", "tres-per-job"), ("ask_gres", "tres-per-node")):
        job_id, visible_gpu = (tmp_path / f"{rule}.txt").read_text().split()
        assert jobs[rule]["JobID"] == job_id
        # --gpus=1 is a per-job request, --gres=gpu:1 a per-node one; both got the one GPU.
        assert jobs[rule][request_field] == "gres:gpu:1"
        assert visible_gpu == "0"
    # The rule's resources became sbatch's, the profile's defaults filled in the rest.
    assert [(jobs[rule]["Partition"], jobs[rule]["NumCPUs"], jobs[rule]["MinMemory"],
             jobs[rule]["TimeLimit"]) for rule in ("ask_gpus", "both")] == [
        (cluster.partition, "1", "100M", "5:00"), (cluster.partition, "2", "4000M", "1:00:00")]
    completed = {r["JobId"] for r in cluster.completion_records() if r["JobState"] == "COMPLETED"}
    assert {job["JobID"] for job in jobs.values()} <= completed


def copy_workflow(destination: Path) -> Path:
    destination.mkdir()
    shutil.copy2(REPO / "config.yaml", destination / "config.yaml")
    for name in ("workflow", "config", "envs"):
        shutil.copytree(REPO / name, destination / name)
    # The rules hash package sources for their params; jobs import the installed package.
    (destination / "lipsync").symlink_to(REPO / "lipsync")
    # Plumbing-length training (the demo's own trains for minutes at width 0.5).
    (destination / "suite.yaml").write_text(yaml.safe_dump({"training": {
        "options": {"total_samples": 96, "checkpoint_every_samples": 48,
                    "validation_every_samples": 48},
        "models": {"lipgan": {"width": 0.125}}}}))
    return destination


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                        if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow
def test_demo_training_through_slurm_matches_a_local_run(cluster, tmp_path):
    """Synthetic corpus, faces, mels, splits, packing and a LipGAN training run, all as SLURM jobs
    through the repository's SLURM profile; a local run of the same target runs alongside."""
    slurm_dir = copy_workflow(tmp_path / "slurm")
    local_dir = copy_workflow(tmp_path / "local")
    target = [TRAINED, "--configfile", "config/demo.yaml", "suite.yaml"]
    # The local run uses the CPUs the SLURM jobs idle away waiting for status checks. --cores 4
    # gives each rule the threads it gets as a SLURM job (--cpus-per-task), so both runs train
    # with the same number of DataLoader workers.
    local = subprocess.Popen(snakemake_command(*target, "--cores", "4", timeout=900),
                             cwd=local_dir, env=workflow_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        start = time.monotonic()
        result = run(snakemake_command(*target, "--workflow-profile", str(PROFILE),
                                       *FAST_POLLING, timeout=900), slurm_dir,
                     workflow_env(cluster))
        slurm_seconds = time.monotonic() - start
        local_log, _ = local.communicate(timeout=900)
    finally:
        if local.poll() is None:
            local.terminate()  # timeout passes SIGTERM on to snakemake, and -k follows up
            local.wait(timeout=30)
    assert local.returncode == 0, local_log[-5000:]

    jobs = submitted_jobs(cluster, slurm_dir)
    rules = submitted_rules(jobs)
    assert rules == finished_rules(result.stderr) == finished_rules(local_log)
    assert set(rules) == {"synthesize", "faces", "mels", "splits", "pack", "train"}, rules
    assert rules.count("train") == 1 and rules.count("pack") == 2, rules  # small and test sets
    assert {job["State"] for job in jobs} == {"COMPLETED"}, jobs
    # The train rule's requests reached the scheduler: its 4 threads, 16 GB, 24 h on the first
    # attempt, and a GPU asked for with --gpus.
    train_job = next(job for job in jobs if job["Comment"].startswith("rule_train"))
    assert (train_job["NumCPUs"], train_job["MinMemory"], train_job["TimeLimit"],
            train_job["tres-per-job"]) == ("4", "16000M", "1-00:00:00", "gres:gpu:1")
    completed = {r["JobId"] for r in cluster.completion_records() if r["JobState"] == "COMPLETED"}
    assert {job["JobID"] for job in jobs} <= completed
    print(f"{len(jobs)} SLURM jobs in {slurm_seconds:.0f} s")

    # Attributes hold paths and provenance, so compare the arrays, not the files' bytes.
    for split in ("small", "test"):
        packed = h5_arrays(slurm_dir / f"results/datasets/{split}.h5")
        reference = h5_arrays(local_dir / f"results/datasets/{split}.h5")
        assert packed.keys() == reference.keys()
        for name, array in packed.items():
            np.testing.assert_array_equal(array, reference[name], err_msg=f"{split}.h5 {name}")
    trained = torch.load(slurm_dir / TRAINED, map_location="cpu", weights_only=False)
    reference = torch.load(local_dir / TRAINED, map_location="cpu", weights_only=False)
    assert trained["samples"] == reference["samples"]
    trained, reference = trained["networks"], reference["networks"]
    assert trained["generator"].keys() == reference["generator"].keys()
    for name, weights in trained["generator"].items():
        assert torch.equal(weights, reference["generator"][name]), name
