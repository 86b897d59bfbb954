"""The workflow's shape: config validation, the paper DAG planned offline, the local profile, quoted
paths, code hashes that cover what each command imports, lint, pins."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from lipsync.metrics.registry import DEFAULT_METRICS

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


def test_paper_config_plans_whole_dag_offline(tmp_path):
    result = snakemake("-n", "--cores", "4", "--directory", str(tmp_path),
                       "--snakefile", str(SNAKEFILE), "--configfile",
                       str(REPO / "config.yaml"), timeout=300)  # 90 s on a loaded machine
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = planned_jobs(result.stdout)
    speakers = 33
    assert jobs["download_grid"] == speakers
    assert jobs["faces"] == jobs["mels"] == speakers * 4  # 1000 clips in shards of 250
    assert jobs["download_s3fd"] == jobs["download_inception"] == 1
    assert jobs["pack"] == 3
    assert jobs["train"] == 4
    # The four runs, the real faces and the identity copy, and the metric rules' probes besides.
    assert jobs["generate"] >= 6 and jobs["merge_scores"] >= 6
    # One scoring job per system and metric (every metric of evaluate.metrics' default).
    assert jobs["score_metric"] == len(DEFAULT_METRICS) * jobs["merge_scores"]
    # Jobs per speaker shard or per system and metric, never per clip (33,000 clips).
    assert sum(jobs.values()) < 2000
    scoring = {}
    for command in shell_commands(result.stdout):
        if "score-metric" in command:
            metric = command[command.index("--metric") + 1]
            scoring[metric] = json.loads(command[command.index("--options") + 1])
    # Each scoring job reads its own metric's section (KID also FID's, whose reference data it
    # reads) and the shared settings; never evaluate.metrics, so adding a metric rescores no other.
    shared = {"batch_size", "device", "bootstrap"}
    assert set(scoring["csim"]) == {"csim"} | shared
    assert set(scoring["kid"]) == {"kid", "fid"} | shared


def test_download_retries_are_not_a_param_so_changing_them_downloads_nothing_again(tmp_path):
    result = snakemake("results/corpus/s1.tsv", "-n", "--cores", "1", "--directory",
                       str(tmp_path), "--snakefile", str(SNAKEFILE), "--configfile",
                       str(REPO / "config.yaml"))
    assert result.returncode == 0, result.stderr + result.stdout
    (command,) = [c for c in shell_commands(result.stdout) if "download-grid" in c]
    options = json.loads(command[command.index("--options") + 1])
    assert "retries" not in options and "timeout_seconds" not in options
    assert json.loads(command[command.index("--transfer") + 1]) == {"retries": 5,
                                                                    "timeout_seconds": 120}


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
def test_every_rule_runs_a_command_that_lipsync_has(rule_file):
    from lipsync.cli import build_parser

    subcommands = set(next(action.choices for action in build_parser()._actions
                           if isinstance(action.choices, dict)))
    for command in re.findall(r'--log-file \{log:q\} ([a-z-]+)', rule_file.read_text()):
        assert command in subcommands, f"{rule_file.name} runs `lipsync {command}`"


@pytest.mark.parametrize("rule_file", sorted((REPO / "workflow" / "rules").glob("*.smk")),
                         ids=lambda p: p.name)
def test_every_shell_rule_calls_the_lipsync_command_line(rule_file):
    text = rule_file.read_text()
    for shell in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text):
        # train starts `lipsync`, or torchrun running lipsync.cli when it has several GPUs
        assert shell.strip().startswith(('"lipsync ', '"{params.launcher} ')), shell


def test_the_readme_command_applies_the_local_profile():
    # Run from the repository root as the README says: Snakemake finds workflow/Snakefile and,
    # beside it, workflow/profiles/default (retries, rerun-incomplete, one GPU job at a time).
    result = snakemake("-n", "--cores", "2", "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    assert ("Using workflow specific profile workflow/profiles/default for setting default "
            "command line arguments.") in result.stderr


def shell_commands(output: str) -> list[list[str]]:
    """The shell commands of a dry run (the profile sets printshellcmds), split as the shell does."""
    return [shlex.split(line.split("Shell command: ", 1)[1])
            for line in output.splitlines() if line.startswith("Shell command: ")]


def test_paths_with_a_space_and_an_accent_reach_every_command_whole(tmp_path):
    project = tmp_path / "my project é"
    corpus = tmp_path / "my corpus é"
    (corpus / "s1").mkdir(parents=True)
    for clip in ("bbaf2n", "bbal7s"):
        (corpus / "s1" / f"{clip}.mpg").write_bytes(b"")  # a dry run only lists the clips
    weights = "results/my weights é/s3fd.pth"
    config = tmp_path / "spaces.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": "local", "speakers": ["s1"], "local": {"root": str(corpus)}},
        "faces": {"detector": "s3fd", "s3fd_weights": weights},
    }, allow_unicode=True), encoding="utf-8")
    result = snakemake("-n", "--cores", "2", "--directory", str(project), "--snakefile",
                       str(SNAKEFILE), "--configfile", str(config))
    assert result.returncode == 0, result.stderr + result.stdout
    commands = shell_commands(result.stdout)
    assert any(command[3] == "scan-local" and str(corpus) in command for command in commands)
    assert any(command[3] == "download-weights" and weights in command for command in commands)
    for command in commands:
        for argument in command:
            if "corpus é" in argument or "weights é" in argument:
                # a path in a JSON --options value is quoted as a whole too
                assert str(corpus) in argument or weights in argument, command


HARNESS = """
configfile: {config!r}


include: {common!r}


import json

from lipsync.core import codehash

# A command that runs metrics by name gets, from its rules, the modules of the metrics it runs.
print("CODE_MODULES " + json.dumps({{
    c: sorted(codehash.code_files(PACKAGE, c, metric_modules(_metric_registry().METRICS)
                                  if c in {metric_commands!r} else ()))
    for c in {commands!r}
}}))
"""

# Commands that look metrics up by name (their rules hash the modules of the metrics they run);
# any other command that imports the metric registry (training borrows its SSIM) runs no metric.
METRIC_COMMANDS = ("metric-reference", "score", "score-metric", "score-videos")

# Imports what `lipsync <command>` imports before it touches its arguments, plus what the model
# registry imports by name, and the metric registry for the commands that score (METRIC_COMMANDS);
# prints the lipsync modules then loaded. Third-party
# libraries are imported once before forking one child per command, to keep this fast.
IMPORTS_PER_COMMAND = """
import importlib, json, os, sys
import cv2, h5py, numpy, pandas, torch  # noqa: F401
import lipsync.cli as cli
METRIC_COMMANDS = %r

class Stop(Exception):
    pass

class NoArguments:
    def __getattr__(self, name):
        raise Stop

loaded = {}
for name, (_, _, run) in cli._COMMANDS.items():
    read, write = os.pipe()
    if os.fork() == 0:
        try:
            run(NoArguments())
        except Stop:
            pass
        if "lipsync.models.registry" in sys.modules:
            for module in sys.modules["lipsync.models.registry"].MODELS.values():
                importlib.import_module(module)
        if name in METRIC_COMMANDS:
            sys.modules["lipsync.metrics.registry"].load()
        modules = sorted(m for m in sys.modules if m == "lipsync" or m.startswith("lipsync."))
        os.write(write, json.dumps(modules).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        loaded[name] = json.loads(pipe.read())
    os.wait()
print(json.dumps(loaded))
"""


def test_every_module_a_command_imports_is_in_its_rules_code_hash(tmp_path):
    imported = json.loads(subprocess.run(
        [sys.executable, "-c", IMPORTS_PER_COMMAND % (METRIC_COMMANDS,)], cwd=tmp_path, capture_output=True,
        text=True, check=True, timeout=300).stdout)
    (tmp_path / "workflow").mkdir()
    (tmp_path / "lipsync").symlink_to(REPO / "lipsync")
    (tmp_path / "workflow" / "Snakefile").write_text(HARNESS.format(
        config=str(REPO / "config.yaml"), common=str(REPO / "workflow/rules/common.smk"),
        commands=sorted(imported), metric_commands=METRIC_COMMANDS))
    result = snakemake("-n", "--cores", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("CODE_MODULES "))
    hashed = json.loads(line.removeprefix("CODE_MODULES "))
    for command, modules in imported.items():
        missing = set(modules) - set(hashed[command]) - {"lipsync.cli"}
        assert not missing, f"lipsync {command} imports {sorted(missing)}, not in its code hash"
    assert "lipsync.training.checkpoint" in hashed["generate"]  # the hand-written list had left it out
    assert "lipsync.data.faces" not in hashed["mels"]
    assert "lipsync.metrics.landmarks" not in hashed["train"]  # no metric registry strings
