"""Score one generated test set with every configured metric of the registry, in one streaming pass.

Writes `metrics/{run}/scores.tsv` (one row per sample: sample, speaker, clip, frame and every
per-frame column), `metrics/{run}/clips.tsv` (one row per clip: speaker, clip, frames and every
per-clip column) and `metrics/{run}/summary.json` (per metric: protocol, each column's value with
its bootstrap interval over clips, what was missing and why). A metric that fails is recorded
with its reason ("n/a (reason)" in the tables) and the others still finish.

Reference data (work on the real faces only, `Metric.reference`) is written once per test set by
`write_reference` and checked here against the protocol and the ground-truth faces it was made
from.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import atomic_path, write_json, write_tsv
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults
from lipsync.core.progress import progress
from lipsync.core.provenance import describe
from lipsync.metrics import bootstrap, registry
from lipsync.metrics.base import NA, Batch, Context, Metric, Result, shown  # noqa: F401
from lipsync.metrics.testset import GeneratedSet, TestSet, batches

log = get_logger(__name__)

# Config section `evaluate` (each metric's own section evaluate.<name> is declared by its module).
OPTIONS = {
    "metrics": Option(list(registry.DEFAULT_METRICS), list, "Registered metrics to score "
                      "(lipsync/metrics/registry.py), in this order: scores, tables, figures and "
                      "the report follow this list.", items=str),
    "batch_size": Option(1024, int, "Frames read and handed to the metrics per step.", minimum=1),
    "device": Option("auto", str, "auto (CUDA when present), cpu or cuda[:N]."),
}
DEFAULTS = defaults(OPTIONS)


def settings(options: dict | None) -> dict:
    return {**DEFAULTS, **(options or {})}


def protocol_key(record: dict) -> str:
    """A short hash of a protocol record (sample counts left out): the reference cache key."""
    record = {k: v for k, v in record.items() if k != "sample_count"}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(test_set: TestSet, batch_size: int = 1024) -> str:
    """sha256 of the ground-truth faces in sample order: which real faces a result belongs to."""
    digest = hashlib.sha256()
    for start, stop in batches(test_set.n_samples, batch_size):
        digest.update(np.ascontiguousarray(test_set.ground_truth(start, stop)).tobytes())
    return digest.hexdigest()


# --- reference data ------------------------------------------------------------------------------


def write_reference(metric_name: str, test_set: str | os.PathLike, output: str | os.PathLike, *,
                    options: dict | None, threads: int = 1) -> dict:
    """Compute `metric_name`'s reference data from the real test faces into `output` (.npz).

    The file holds the metric's arrays plus `protocol` (JSON), `key`, `n` and `fingerprint`, so
    scoring refuses data made under other settings or from other faces.
    """
    import torch  # here, not above: merging a system's scores needs no torch

    from lipsync.core.device import pick_device

    torch.set_num_threads(max(1, threads))
    s = settings(options)
    metric = registry.get(metric_name)
    if not metric.has_reference():
        raise LipsyncError(f"metric {metric_name!r} has no reference data to compute")
    metric_options = registry.options(metric, options)
    with TestSet(test_set) as truth:
        n, digest = truth.n_samples, fingerprint(truth, s["batch_size"])
        try:
            record = metric.protocol(metric_options)
            arrays = metric.reference(truth, metric_options, device=pick_device(s["device"]),
                                      threads=threads)
            failed = ""
        except LipsyncError as error:
            # Recorded, not raised: scoring then reports this metric as n/a with the reason and
            # every other metric still runs.
            log.warning("%s reference data cannot be computed: %s", metric_name, error)
            record, arrays, failed = {}, {}, str(error)
    with atomic_path(output) as tmp, open(tmp, "wb") as handle:
        # A file handle, not a name: np.savez would append ".npz" to the temporary name.
        np.savez(handle, **arrays, protocol=json.dumps(record, default=str),
                 key=protocol_key(record) if record else "", n=np.int64(n), fingerprint=digest,
                 test_set=str(test_set), failed=failed)
    log.info("%s reference data of %d ground-truth faces -> %s", metric_name, n, output)
    return record


def load_reference(path: str | os.PathLike) -> dict:
    if not Path(path).is_file():
        raise InputError(path, "metric reference data not found (run `lipsync metric-reference`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, KeyError, ValueError) as error:
        raise InputError(path, f"not metric reference data ({error})") from None


def _check_reference(name: str, path, data: dict, expected_key: str, n: int) -> None:
    command = f"rerun `lipsync metric-reference --metric {name}`"
    if str(data.get("key")) != expected_key:
        raise InputError(path, f"{name} reference data were made under other evaluate.{name} "
                               f"settings (key {data.get('key')}, now {expected_key}); {command}")
    if int(data.get("n", -1)) != n:
        raise InputError(path, f"{name} reference data cover {int(data.get('n', -1))} faces, the "
                               f"test set has {n} samples; {command}")


# --- scoring ------------------------------------------------------------------------------------


class _Slot:
    """One configured metric during a job: the instance, or why it could not run."""

    def __init__(self, metric: type[Metric], options: dict):
        self.metric, self.options = metric, options
        self.instance: Metric | None = None
        self.failure: str | None = None
        self.result: Result | None = None

    def fail(self, stage: str, error: BaseException) -> None:
        self.failure = f"{type(error).__name__}: {error}" if not isinstance(
            error, LipsyncError) else str(error)
        self.instance = None
        if isinstance(error, LipsyncError):  # explained (weights not there, ...): an expected n/a
            log.warning("metric %s is n/a (%s): %s", self.metric.name, stage, self.failure)
            return
        log.error("metric %s failed while %s: %s\n%s", self.metric.name, stage, self.failure,
                  "".join(traceback.format_exception(error)))


def _open_pair(generated, test_set):
    truth = TestSet(test_set)
    try:
        output = GeneratedSet(generated)
    except Exception:
        truth.close()
        raise
    n = truth.n_samples
    if output.n_samples != n:
        raise InputError(generated, f"has {output.n_samples} generated faces but the test set "
                                    f"{test_set} has {n} samples (one face per sample, in sample "
                                    "order)")
    if n and output.faces.shape[1:] != truth.image_shape:
        raise InputError(generated, f"faces are {output.faces.shape[1:]}, the test set's are "
                                    f"{truth.image_shape}")
    return truth, output


@dataclass
class _Pass:
    """What one streaming pass over a generated set yields: the run's description, the sample
    table and each metric's slot, rows and summary."""

    header: dict
    samples: pd.DataFrame
    slots: list[_Slot]
    frame_table: pd.DataFrame
    clip_table: pd.DataFrame
    summaries: dict[str, dict]


def _start_metrics(slots: list[_Slot], truth: TestSet, samples: pd.DataFrame, device, threads: int,
                   run: str, loaded: dict, options: dict | None) -> None:
    """Build every slot's metric; one cache for the job, so a network is built once."""
    shared_cache: dict = {}
    for slot in slots:
        source = registry.reference_source(slot.metric)
        context = Context(test_set=truth, samples=samples, device=device, threads=threads,
                          run=run, references=loaded, evaluate=options or {},
                          reference=loaded.get(source.name) if source else None,
                          cache=shared_cache)
        if slot.failure is not None:
            continue
        try:
            slot.instance = slot.metric(slot.options, context)
        except Exception as error:  # noqa: BLE001 - one metric's failure must not stop the rest
            slot.fail("starting", error)


def _stream(slots: list[_Slot], truth: TestSet, output: GeneratedSet, batch_size: int) -> str:
    """Hand every batch to every running metric; returns the ground truth's fingerprint."""
    n = truth.n_samples
    digest = hashlib.sha256()
    with progress(total=n, desc=f"score {output.run}", unit="frame") as bar:
        for start, stop in batches(n, batch_size):
            real = truth.ground_truth(start, stop)
            digest.update(np.ascontiguousarray(real).tobytes())
            batch = Batch(start, stop, output.faces[start:stop], real)
            for slot in slots:
                if slot.instance is not None:
                    try:
                        slot.instance.update(batch)
                    except Exception as error:  # noqa: BLE001
                        slot.fail(f"scoring samples {start}-{stop}", error)
            bar.update(stop - start)
    for slot in slots:
        if slot.instance is not None:
            try:
                slot.result = slot.instance.result()
            except Exception as error:  # noqa: BLE001
                slot.fail("computing the result", error)
    return digest.hexdigest()


def _score_pass(generated, test_set, metrics: list[type[Metric]], references: dict, *,
                options: dict | None, threads: int) -> _Pass:
    """Score `generated` with `metrics` in one streaming pass over the test set."""
    import torch

    from lipsync.core.device import pick_device

    torch.set_num_threads(max(1, threads))
    s = settings(options)
    device = pick_device(s["device"])
    slots = [_Slot(metric, registry.options(metric, options)) for metric in metrics]
    truth, output = _open_pair(generated, test_set)
    try:
        samples = truth.sample_table()
        loaded = _load_references(slots, references, truth.n_samples, options)
        _start_metrics(slots, truth, samples, device, threads, output.run, loaded, options)
        digest = _stream(slots, truth, output, s["batch_size"])
        for name, data in loaded.items():
            if str(data.get("fingerprint")) != digest:
                raise InputError(references[name], f"{name} reference data were computed from "
                                                   f"other ground-truth faces than {test_set}")
        header = {"run": output.run, "model": output.model, "checkpoint": output.checkpoint,
                  "generated": str(generated), "trained_samples": output.trained_samples,
                  "test_set": str(test_set), "n_samples": truth.n_samples,
                  "device": str(device)}
    finally:
        output.__exit__(None, None, None)
        truth.close()
    frame_table, clip_table = _tables(slots, samples, len(samples))
    members = bootstrap.clip_members(samples)
    summaries = {slot.metric.name: _summarize(slot, frame_table, clip_table, members, options)
                 for slot in slots}
    return _Pass(header, samples, slots, frame_table, clip_table, summaries)


def _merged_summary(header: dict, summaries: dict[str, dict], n_clips: int,
                    options: dict | None) -> dict:
    """summary.json: the run, then every metric's summary in the given order."""
    return {
        **header, "n_clips": n_clips, "metrics": summaries, "metric_order": list(summaries),
        "labels": sorted({label for m in summaries.values() for label in m["labels"]}),
        "warnings": [w for m in summaries.values() for w in m["warnings"]],
        "bootstrap": bootstrap.protocol((options or {}).get("bootstrap")),
        "options": options or {}, "provenance": describe(),
    }


def _log_summary(summary: dict) -> None:
    log.info("%s: %s", summary["run"], "; ".join(
        f"{column} {shown(entry)}" for m in summary["metrics"].values()
        for column, entry in m["columns"].items()))


def score_run(generated: str | os.PathLike, test_set: str | os.PathLike,
              references: dict[str, str | os.PathLike], scores_tsv: str | os.PathLike,
              clips_tsv: str | os.PathLike, summary_json: str | os.PathLike, *,
              options: dict | None, threads: int = 1) -> dict:
    """Score `generated/{run}.h5` against the test set with every configured metric, in one pass.

    `options` is the config's `evaluate` section; `references` maps a metric name to its
    reference file (`registry.reference_metrics(options)` lists which are needed). The workflow
    scores each metric in its own job instead (`score_metric`, then `merge_scores`).
    """
    done = _score_pass(generated, test_set, registry.configured(options), references,
                       options=options, threads=threads)
    write_tsv(scores_tsv, done.frame_table)
    write_tsv(clips_tsv, done.clip_table)
    summary = _merged_summary(done.header, done.summaries, len(done.clip_table), options)
    write_json(summary_json, summary)
    _log_summary(summary)
    return summary


def score_with_references(generated: str | os.PathLike, test_set: str | os.PathLike,
                          reference_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                          options: dict | None, threads: int = 1,
                          reuse_references: bool = False) -> dict:
    """Outside the workflow: each configured metric's reference data into
    `reference_dir/{metric}.npz` (kept where `reuse_references` and present), then `score_run`
    into `output_dir/scores.tsv`, `clips.tsv` and `summary.json`."""
    references = {}
    for name in registry.reference_metrics(options):
        references[name] = Path(reference_dir) / f"{name}.npz"
        if not (reuse_references and references[name].is_file()):
            write_reference(name, test_set, references[name], options=options, threads=threads)
    output_dir = Path(output_dir)
    return score_run(generated, test_set, references, output_dir / "scores.tsv",
                     output_dir / "clips.tsv", output_dir / "summary.json", options=options,
                     threads=threads)


# --- one metric per job, then a merge (the workflow) ----------------------------------------------


def score_metric(generated: str | os.PathLike, test_set: str | os.PathLike, metric_name: str,
                 references: dict[str, str | os.PathLike], part_json: str | os.PathLike,
                 rows_tsv: str | os.PathLike, *, options: dict | None, threads: int = 1) -> dict:
    """Score `generated` with one metric: its summary into `part_json`, its rows into `rows_tsv`
    (per frame: sample, speaker, clip, frame and its columns; per clip: speaker, clip, frames and
    its columns; a set metric: the clips alone). `merge_scores` joins the parts of a system.

    `options` holds what this metric reads: `evaluate.<metric_name>` (and the section of the
    metric whose reference data it reads), batch_size, device and bootstrap.
    """
    metric = registry.get(metric_name)
    done = _score_pass(generated, test_set, [metric], references, options=options,
                       threads=threads)
    names = [column.name for column in metric.columns]
    if metric.level == "frame":
        rows = done.frame_table[["sample", "speaker", "clip", "frame", *names]]
    elif metric.level == "clip":
        rows = done.clip_table[["speaker", "clip", "frames", *names]]
    else:
        rows = done.clip_table[["speaker", "clip", "frames"]]
    part = {**done.header, "metric": metric_name, "summary": done.summaries[metric_name],
            "options": options or {}}
    write_tsv(rows_tsv, rows)
    write_json(part_json, part)
    return part


def _read_part(part_json: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """One metric's part: its JSON and the rows beside it (same name, .tsv)."""
    part_json = Path(part_json)
    rows_tsv = part_json.with_suffix(".tsv")
    try:
        part = json.loads(part_json.read_text())
        rows = pd.read_csv(rows_tsv, sep="\t", dtype={"speaker": str, "clip": str})
    except (OSError, ValueError) as error:
        raise InputError(part_json, f"not a metric result with its rows ({error})") from None
    if "metric" not in part or "summary" not in part:
        raise InputError(part_json, "not a metric result of `lipsync score-metric`")
    return part, rows


def merge_scores(parts: list[str | os.PathLike], test_set: str | os.PathLike,
                 scores_tsv: str | os.PathLike, clips_tsv: str | os.PathLike,
                 summary_json: str | os.PathLike) -> dict:
    """Join one system's metric results (`score_metric` parts, in `evaluate.metrics` order) into
    the files one `score_run` writes: scores.tsv, clips.tsv and summary.json."""
    with TestSet(test_set) as truth:
        samples = truth.sample_table()
    frame_table = samples.copy()
    frames = samples.groupby(["speaker", "clip"], sort=False).size().rename("frames")
    clip_table = frames.reset_index()
    summaries, options, header = {}, {}, {}
    for path in parts:
        part, rows = _read_part(path)
        if part.get("n_samples") != len(samples):
            raise InputError(path, f"scores {part['n_samples']} samples, {test_set} has "
                                   f"{len(samples)}")
        header = header or {k: v for k, v in part.items()
                            if k not in ("metric", "summary", "options")}
        summaries[part["metric"]] = part["summary"]
        options.update(part["options"])
        extra = [c for c in rows.columns if c not in ("sample", "speaker", "clip", "frame",
                                                      "frames")]
        if "sample" in rows.columns:
            frame_table = frame_table.merge(rows[["sample", *extra]], on="sample", how="left")
        elif extra:
            clip_table = clip_table.merge(rows[["speaker", "clip", *extra]],
                                          on=["speaker", "clip"], how="left")
    options["metrics"] = list(summaries)
    write_tsv(scores_tsv, frame_table)
    write_tsv(clips_tsv, clip_table)
    summary = _merged_summary(header, summaries, len(clip_table), options)
    write_json(summary_json, summary)
    _log_summary(summary)
    return summary


def _load_references(slots: list[_Slot], references: dict, n: int,
                     evaluate_options: dict | None) -> dict[str, dict]:
    loaded = {}
    for slot in slots:
        source = registry.reference_source(slot.metric)
        if source is None or source.name in loaded:
            continue
        path = references.get(source.name)
        try:
            if path is None:
                raise LipsyncError(f"no reference data given for metric {source.name!r} "
                                   f"(--reference {source.name}=PATH)")
            data = load_reference(path)
            if str(data.get("failed", "")):
                raise LipsyncError(str(data["failed"]))
            record = source.protocol(registry.options(source, evaluate_options))
            _check_reference(source.name, path, data, protocol_key(record), n)
        except InputError:
            raise  # a stale or foreign reference is the user's to fix, not a metric failure
        except Exception as error:  # noqa: BLE001
            slot.fail("loading reference data", error)
            continue
        loaded[source.name] = data
    return loaded


def _tables(slots: list[_Slot], samples: pd.DataFrame, n: int):
    frame_table = samples.copy()
    clip_keys = samples[["speaker", "clip"]].drop_duplicates().reset_index(drop=True)
    frames = samples.groupby(["speaker", "clip"], sort=False).size().rename("frames")
    clip_table = clip_keys.merge(frames.reset_index(), on=["speaker", "clip"], how="left")
    for slot in slots:
        if slot.metric.level == "frame":
            for column in slot.metric.columns:
                values = None
                if slot.result is not None:
                    values = np.asarray(slot.result.values.get(column.name), dtype=np.float64)
                    if values.shape != (n,):
                        slot.failure = (f"returned {values.shape} values for {column.name}, "
                                        f"expected {n}")
                        slot.result, values = None, None
                frame_table[column.name] = values if values is not None else np.nan
        elif slot.metric.level == "clip":
            names = [c.name for c in slot.metric.columns]
            if slot.result is not None:
                given = pd.DataFrame(slot.result.values)
                clip_table = clip_table.merge(given[["speaker", "clip", *names]],
                                              on=["speaker", "clip"], how="left")
            else:
                for name in names:
                    clip_table[name] = np.nan
    return frame_table, clip_table


def _summarize(slot: _Slot, frame_table: pd.DataFrame, clip_table: pd.DataFrame,
               members: list[np.ndarray], options: dict | None) -> dict:
    metric = slot.metric
    boot = (options or {}).get("bootstrap")
    try:
        record = metric.protocol(slot.options)
    except Exception as error:  # noqa: BLE001 - e.g. missing weights: already the failure
        record = {"unavailable": str(error)}
    summary = {"level": metric.level, "description": metric.description,
               "protocol": {**record, "sample_count": len(frame_table),
                            "bootstrap": bootstrap.protocol(boot)},
               "failed": slot.failure, "columns": {}, "labels": [], "warnings": [],
               "missing": {}, "extra": {}}
    if slot.result is not None:
        summary.update(labels=list(slot.result.labels), warnings=list(slot.result.warnings),
                       missing=dict(slot.result.missing), extra=dict(slot.result.extra))
    for column in metric.columns:
        entry = {"unit": column.unit, "higher_is_better": column.higher_is_better,
                 "description": column.description, "decimals": column.decimals,
                 "level": metric.level, "ranked": column.ranked}
        if slot.result is None:
            entry.update(value=None, ci_low=None, ci_high=None, reason=slot.failure)
        elif metric.level == "frame":
            values = frame_table[column.name].to_numpy(dtype=np.float64)
            stats = bootstrap.describe(values)
            low, high = bootstrap.mean_interval(values, members, boot)
            entry.update(value=stats["mean"], ci_low=low, ci_high=high, **stats)
            if stats["mean"] is None and stats["n_infinite"]:
                entry["reason"] = "infinite for every frame (identical to the ground truth)"
        elif metric.level == "clip":
            values = clip_table[column.name].to_numpy(dtype=np.float64)
            stats = bootstrap.describe(values)
            per_clip = [np.array([k]) for k in range(len(values))]
            low, high = bootstrap.mean_interval(values, per_clip, boot)
            entry.update(value=stats["mean"], ci_low=low, ci_high=high, **stats)
        else:
            value = slot.result.values.get(column.name)
            entry.update(value=None if value is None or not np.isfinite(value) else float(value),
                         ci_low=None, ci_high=None)
        summary["columns"][column.name] = entry
    if metric.level == "set" and slot.result is not None and slot.instance is not None:
        try:
            intervals = bootstrap.set_interval(slot.instance.resample, members,
                                               [c.name for c in metric.columns], boot)
        except NotImplementedError:
            intervals = {}
        except Exception as error:  # noqa: BLE001 - an interval failing keeps the value
            log.warning("%s: bootstrap interval failed: %s", metric.name, error)
            intervals = {}
        for name, (low, high) in intervals.items():
            summary["columns"][name].update(ci_low=low, ci_high=high)
    return summary
