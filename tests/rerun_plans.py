"""What `snakemake -n` plans on a finished demo after each kind of change, and the docs table made
from those plans (docs/reruns.md), so the table cannot drift from what the workflow does.

Used by tests/test_demo_workflow.py on its finished demo; `python tests/rerun_plans.py PROJECT`
rewrites the table from a finished demo at PROJECT.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS_TABLE = REPO / "docs" / "reruns.md"
TABLE_START, TABLE_END = "<!-- reruns table: start -->", "<!-- reruns table: end -->"

# A frame metric the demo does not have: one module and one registry line, as any new metric.
NEW_METRIC = '''"""Mean absolute brightness difference per frame (a metric added after the demo ran)."""

import numpy as np

from lipsync.metrics.base import Column, Metric, Result
from lipsync.metrics.registry import register_metric


@register_metric("brightness", level="frame", description="brightness difference", columns=(
    Column("brightness", "mean absolute brightness difference", higher_is_better=False),))
class Brightness(Metric):
    def __init__(self, options, context):
        super().__init__(options, context)
        self.values = []

    @classmethod
    def protocol(cls, options):
        return {"compared": "generated vs real faces", "data_range": 255}

    def update(self, batch):
        difference = batch.generated.astype(np.float64) - batch.real.astype(np.float64)
        self.values.append(np.abs(difference.mean(axis=(1, 2, 3))))

    def result(self):
        return Result(values={"brightness": np.concatenate(self.values)})
'''


@dataclass
class Job:
    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)


def planned(output: str) -> list[Job]:
    """Every job of a dry run's output, with its wildcards."""
    jobs: list[Job] = []
    for line in output.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if match:
            jobs.append(Job(match.group(1)))
        elif jobs and line.strip().startswith("wildcards: "):
            pairs = line.strip().removeprefix("wildcards: ").split(", ")
            jobs[-1].wildcards = dict(pair.split("=", 1) for pair in pairs)
    return [job for job in jobs if job.rule != "all"]


def _edit_every_docstring_and_comment(package: Path) -> None:
    for file in sorted(package.rglob("*.py")):
        text = file.read_text()
        if text.startswith('"""'):
            text = '"""An added first line of documentation.\n\n' + text[3:]
        file.write_text(text + "\n# an added comment\n")
    lipgan = package / "models" / "lipgan.py"
    text = lipgan.read_text()
    text = re.sub(r'(\n    def \w+\([^\n]*\n)(        """)', r'\1\2Documented. ', text, count=1)
    lipgan.write_text(text)


def _change_kid_code(package: Path) -> None:
    # KID's module: no other metric imports it (CSIM imports LMD's landmarks module, so an edit
    # there rescores both: a module's change reruns every job that runs it).
    file = package / "metrics" / "kid.py"
    file.write_text(file.read_text() + "\n_RERUN_PROBE = 1  # a real change: a new statement\n")


def _add_a_metric(package: Path) -> None:
    (package / "metrics" / "brightness.py").write_text(NEW_METRIC)
    registry = package / "metrics" / "registry.py"
    text = registry.read_text()
    registry.write_text(text.replace('    "lipsync.metrics.identity",\n',
                                     '    "lipsync.metrics.identity",\n'
                                     '    "lipsync.metrics.brightness",\n', 1))


@dataclass
class Change:
    """One row of the table: what a user changes, as a config overlay and/or a code edit."""

    label: str
    config: dict = field(default_factory=dict)
    edit: Callable[[Path], None] | None = None


DEFAULT_METRICS = ["fid", "kid", "ssim", "psnr", "lmd", "csim", "lse"]
CHANGES = {
    "docstrings": Change("a docstring or comment anywhere in `lipsync/`",
                         edit=_edit_every_docstring_and_comment),
    "metric_module": Change("a metric's module (a real code change in "
                            "`lipsync/metrics/kid.py`, KID)", edit=_change_kid_code),
    "metric_options": Change("a metric's options (`evaluate.csim.frames_per_clip`)",
                             config={"evaluate": {"csim": {"frames_per_clip": 2}}}),
    "new_metric": Change("a new metric (its module, its registry line, `evaluate.metrics`)",
                         config={"evaluate": {"metrics": [*DEFAULT_METRICS, "brightness"]}},
                         edit=_add_a_metric),
    "removed_metric": Change("a metric removed from `evaluate.metrics` (LSE)",
                             config={"evaluate": {"metrics": DEFAULT_METRICS[:-1]}}),
    "model_options": Change("a model's options (`training.models.l1wgan_gp.n_critic`)",
                            config={"training": {"models": {"l1wgan_gp": {"n_critic": 3}}}}),
    "one_run": Change("one run's options (`training.runs.lipgan-small.learning_rate`)",
                      config={"training": {"runs": {"lipgan-small": {"learning_rate": 0.002}}}}),
    "test_split": Change("the test split (`splits.test`: 2 clips per speaker -> 1)",
                         config={"splits": {"test": 1}}),
    "face_detector": Change("the face detector (`faces.detector`: opencv -> dlib)",
                            config={"faces": {"detector": "dlib"}}),
}


@contextmanager
def edited(package: Path, edit: Callable[[Path], None] | None):
    """The package with `edit` applied, restored afterwards (files added by it removed)."""
    before = {file: file.read_bytes() for file in package.rglob("*.py")}
    try:
        if edit:
            edit(package)
        yield
    finally:
        for file in set(package.rglob("*.py")) - set(before):
            file.unlink()
        for file, content in before.items():
            file.write_bytes(content)


# --- the docs table ---------------------------------------------------------------------------------

# The DAG's order, for a table that reads from the corpus to the report.
RULE_ORDER = ("synthesize", "scan_local", "download_grid", "faces", "mels", "splits", "pack",
              "contact_sheet", "train", "train_syncnet", "generate", "defect", "dub",
              "metric_reference", "score_metric", "merge_scores", "tables", "figures",
              "sensitivity", "agreement")


def _described(rule: str, jobs: list[Job], everything: dict[str, int]) -> str:
    """One rule's jobs in words that hold for any demo size: all of them, only one metric's,
    the wildcards of a few, or a count."""
    metrics = {job.wildcards.get("metric") for job in jobs}
    if rule in ("score_metric", "metric_reference") and len(metrics) == 1:
        (metric,) = metrics
        share = ("every system" if rule == "score_metric" and len(jobs) == everything["merge_scores"]
                 else f"{len(jobs)}")
        return f"`{rule}` ({metric} only, {share})"
    if len(jobs) == everything.get(rule):
        return f"`{rule}` (all)" if len(jobs) > 1 else f"`{rule}`"
    if len(jobs) <= 4:
        names = sorted({"/".join(job.wildcards.values()) for job in jobs})
        return f"`{rule}` ({', '.join(names)})" if any(names) else f"`{rule}`"
    return f"`{rule}` ({len(jobs)})"


def row(label: str, jobs: list[Job], everything: dict[str, int]) -> str:
    """A table row: the change, then the rules it reruns in DAG order."""
    rules = sorted({job.rule for job in jobs}, key=lambda r: (
        RULE_ORDER.index(r) if r in RULE_ORDER else len(RULE_ORDER), r))
    text = ", ".join(_described(r, [j for j in jobs if j.rule == r], everything) for r in rules)
    return f"| {label} | {text or 'nothing'} |"


def table(plans: dict[str, list[Job]], everything: dict[str, int]) -> str:
    lines = ["| you change | `snakemake -n` plans |", "|---|---|"]
    lines += [row(CHANGES[key].label, plans[key], everything) for key in CHANGES]
    return "\n".join(lines)


def documented_table() -> str:
    text = DOCS_TABLE.read_text()
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


def write_documented_table(new_table: str) -> None:
    text = DOCS_TABLE.read_text()
    head, rest = text.split(TABLE_START, 1)
    DOCS_TABLE.write_text(f"{head}{TABLE_START}\n{new_table}\n{TABLE_END}"
                          f"{rest.split(TABLE_END, 1)[1]}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from test_demo_workflow import all_plans

    project = Path(sys.argv[1])
    write_documented_table(table(*all_plans(project)))
    print(documented_table())
