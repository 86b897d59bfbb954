"""The workflow's shape: config validation, the paper DAG planned offline in seconds, lint, pins."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SNAKEFILE = REPO / "workflow" / "Snakefile"


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts per rule from the 'Job stats' table of a dry run."""
    counts = {}
    table = output.split("Job stats:", 1)[-1]
    for line in table.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def test_paper_config_plans_whole_dag_offline_in_seconds(tmp_path):
    start = time.monotonic()
    result = snakemake("-n", "--cores", "4", "--directory", str(tmp_path),
                       "--snakefile", str(SNAKEFILE), "--configfile",
                       str(REPO / "config.yaml"))
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = planned_jobs(result.stdout)
    speakers = 33
    assert jobs["download_grid"] == speakers
    assert jobs["faces"] == jobs["mels"] == speakers * 4  # 1000 clips in shards of 250
    assert jobs["download_s3fd"] == jobs["download_inception"] == 1
    assert jobs["pack"] == 3
    assert jobs["train"] == 4
    assert jobs["generate"] == jobs["score"] == 5  # four runs and the identity baseline
    assert sum(jobs.values()) < 400
    assert elapsed < 60, f"dry run took {elapsed:.0f} s"


def test_mistyped_config_key_fails_naming_the_key(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump({"faces": {"paddding": {"top": 0.1}}}))
    result = snakemake("-n", "--cores", "1", "--directory", str(tmp_path), "--snakefile",
                       str(SNAKEFILE), "--configfile", str(config))
    assert result.returncode != 0
    assert "paddding" in result.stderr + result.stdout


def test_lint_reports_nothing():
    result = snakemake("--lint", "--configfile", "config/demo.yaml", "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_rule_files_are_snakefmt_formatted():
    files = [SNAKEFILE, *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)==(.+)$", requirement.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_conda_env_pins_match_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    package_pins = _pins(project["dependencies"])
    env = yaml.safe_load((REPO / "envs" / "lipsync.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = _pins(pip_section)
    shared = {name: version for name, version in package_pins.items() if name != "snakemake"}
    assert env_pins == shared


@pytest.mark.parametrize("rule_file", sorted((REPO / "workflow" / "rules").glob("*.smk")),
                         ids=lambda p: p.name)
def test_every_shell_rule_calls_the_lipsync_command_line(rule_file):
    text = rule_file.read_text()
    for shell in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text):
        # train starts `lipsync`, or torchrun running lipsync.cli when it has several GPUs
        assert shell.strip().startswith(('"lipsync ', '"{params.launcher} ')), shell
