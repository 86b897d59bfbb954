"""Code hashes of the workflow's jobs: what a `lipsync` command runs, by meaning (a comment or a
docstring changes nothing), and no metric module where no metric is scored."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lipsync.core import codehash

PACKAGE = Path(__file__).resolve().parents[1] / "lipsync"
METRIC_MODULES = ("lipsync.metrics.fid", "lipsync.metrics.kid", "lipsync.metrics.landmarks",
                  "lipsync.metrics.identity", "lipsync.metrics.sync")


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the package to edit."""
    return Path(shutil.copytree(PACKAGE, tmp_path / "lipsync",
                                ignore=shutil.ignore_patterns("__pycache__")))


def _edit(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text, f"{old!r} not in {file}"
    file.write_text(text.replace(old, new, 1))


def test_comments_and_docstrings_change_no_hash(package):
    before = {c: codehash.code_hash(package, c) for c in ("train", "score-metric", "tables")}
    _edit(package / "training" / "loop.py", '"""', '"""A new first line of the module docstring.\n')
    _edit(package / "metrics" / "score.py", "def merge_scores(", "# a comment\ndef merge_scores(")
    _edit(package / "metrics" / "score.py", '    """Join one system', '    """Merge: join one system')
    _edit(package / "cli.py", "def _score(args):", "def _score(args):  # scoring\n    '''doc'''")
    for file in package.rglob("*.py"):
        file.write_text(file.read_text() + "\n# a trailing comment\n")
    assert {c: codehash.code_hash(package, c) for c in before} == before


def test_a_real_change_reruns_the_commands_that_run_it_only(package):
    before = {c: codehash.code_hash(package, c) for c in ("train", "generate", "score-metric")}
    _edit(package / "metrics" / "score.py", "n_clips\": n_clips", "n_clips\": n_clips + 0")
    after = {c: codehash.code_hash(package, c) for c in before}
    assert after["score-metric"] != before["score-metric"]
    assert after["train"] == before["train"] and after["generate"] == before["generate"]


def test_training_and_generation_run_no_metric_module_but_what_they_import():
    for command in ("train", "train-syncnet", "generate"):
        files = codehash.code_files(PACKAGE, command)
        assert not set(files) & set(METRIC_MODULES), command
        assert "lipsync.cli" not in files and "lipsync.report.tables" not in files
        assert not any(name.startswith("lipsync.analysis") for name in files)


def test_a_scoring_job_runs_its_own_metric_module_only():
    lmd = codehash.code_files(PACKAGE, "score-metric", ["lipsync.metrics.landmarks"])
    assert "lipsync.metrics.landmarks" in lmd
    assert not {"lipsync.metrics.fid", "lipsync.metrics.identity", "lipsync.metrics.sync"} & set(lmd)


def test_a_cli_edit_reruns_only_the_command_it_is_in(package):
    commands = ("train", "score-metric", "metric-reference")
    before = {c: codehash.code_hash(package, c) for c in commands}
    # The first such help text is metric-reference's (its own arguments function).
    _edit(package / "cli.py", 'help="registered metric name (fid, lmd, ...)"',
          'help="a registered metric name"')
    after = {c: codehash.code_hash(package, c) for c in commands}
    assert after["metric-reference"] != before["metric-reference"]
    assert after["train"] == before["train"] and after["score-metric"] == before["score-metric"]


def test_an_unknown_command_is_named():
    with pytest.raises(codehash.UnknownCommand, match="no command 'no-such-step'"):
        codehash.code_hash(PACKAGE, "no-such-step")


def test_docstrings_are_dropped_from_modules_classes_and_functions_alone():
    with_docs = 'class A:\n    """Doc."""\n    def f(self):\n        "doc"\n        return "doc"\n'
    bare = "class A:\n    def f(self):\n        return 'doc'\n"
    assert codehash.normalized(codehash.ast.parse(with_docs)) == codehash.normalized(
        codehash.ast.parse(bare))
    only_doc = 'def f():\n    """Only a docstring."""\n'
    assert codehash.normalized(codehash.ast.parse(only_doc)) == codehash.normalized(
        codehash.ast.parse("def f():\n    pass\n"))


def test_a_new_line_in_the_metric_registry_rescores_no_other_metric(package):
    before = codehash.code_hash(package, "score-metric", ["lipsync.metrics.landmarks"])
    _edit(package / "metrics" / "registry.py", '    "lipsync.metrics.identity",\n',
          '    "lipsync.metrics.identity",\n    "lipsync.metrics.brightness",\n')
    assert codehash.code_hash(package, "score-metric", ["lipsync.metrics.landmarks"]) == before
    _edit(package / "metrics" / "registry.py", 'DEFAULT_METRICS = ("fid",',
          'DEFAULT_METRICS = ("kid",')
    assert codehash.code_hash(package, "score-metric", ["lipsync.metrics.landmarks"]) != before
