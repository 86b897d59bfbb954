"""The metric registry: every metric registers here, and scoring, tables, figures and the report
iterate what is registered and configured (`evaluate.metrics`), never a hard-coded list.

A new metric is one module that subclasses `lipsync.metrics.base.Metric` under
`@register_metric(..., options=OPTIONS)` and one line in `MODULES` below. Its Option table is the
one declaration of its config section `evaluate.<name>`: defaults, the checks of its values and
the section of the generated config schema (lipsync.core.config_schema) all come from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from lipsync.core import options as option_tables
from lipsync.core.errors import LipsyncError
from lipsync.metrics.base import LEVELS, Column, Metric

# One line per metric module; importing a module registers the metrics it defines.
MODULES = (
    "lipsync.metrics.fid",
    "lipsync.metrics.kid",
    "lipsync.metrics.ssim_psnr",
    "lipsync.metrics.sync",
    "lipsync.metrics.landmarks",
    "lipsync.metrics.identity",
    "lipsync.metrics.temporal",
    "lipsync.metrics.lipreading",
    "lipsync.metrics.sync_calibrated",
)

# What `evaluate.metrics` scores when not given (lipsync.metrics.score.OPTIONS's default).
DEFAULT_METRICS = ("fid", "kid", "ssim", "psnr", "lmd", "csim", "lse", "lse_calibrated",
                   "temporal", "lve", "wer", "cer")

METRICS: dict[str, type[Metric]] = {}
_loaded = False


def register_metric(name: str, *, level: str, columns: tuple[Column, ...] | list[Column],
                    options: option_tables.Table | None = None, description: str = "",
                    reference_of: str | None = None):
    """Class decorator: register a `Metric` subclass under `name` (also its config section
    `evaluate.<name>`, whose keys, defaults and ranges `options` declares)."""
    if level not in LEVELS:
        raise ValueError(f"metric {name!r}: level must be one of {LEVELS}, not {level!r}")
    if not columns:
        raise ValueError(f"metric {name!r} declares no output columns")

    def register(cls: type[Metric]) -> type[Metric]:
        if not issubclass(cls, Metric):
            raise TypeError(f"metric {name!r}: {cls.__name__} does not subclass Metric")
        cls.name, cls.level, cls.columns = name, level, tuple(columns)
        cls.option_table = dict(options or {})
        cls.defaults = option_tables.defaults(cls.option_table)
        cls.description = description or (cls.__doc__ or "").strip().splitlines()[0]
        cls.reference_of = reference_of
        METRICS[name] = cls
        return cls

    return register


def load() -> dict[str, type[Metric]]:
    """Import every metric module once; returns the registry."""
    global _loaded
    if not _loaded:
        for module in MODULES:
            importlib.import_module(module)
        _loaded = True
    return METRICS


def get(name: str) -> type[Metric]:
    metrics = load()
    if name not in metrics:
        raise LipsyncError(f"unknown metric {name!r} (evaluate.metrics); known: "
                           f"{', '.join(sorted(metrics))}")
    return metrics[name]


def configured(evaluate_options: dict | None) -> list[type[Metric]]:
    """The metrics `evaluate.metrics` names, in that order (default: DEFAULT_METRICS)."""
    load()
    names = (evaluate_options or {}).get("metrics") or list(DEFAULT_METRICS)
    return [get(name) for name in names]


def options(metric: type[Metric] | str, evaluate_options: dict | None) -> dict:
    """A metric's options: its defaults overlaid with `evaluate.<name>`; an unknown key or a bad
    value is an error naming it (`evaluate.kid.subsets: 0: must be at least 1`)."""
    metric = get(metric) if isinstance(metric, str) else metric
    given = (evaluate_options or {}).get(metric.name) or {}
    return option_tables.resolve(metric.option_table, given, f"evaluate.{metric.name}")


def check(evaluate_options: dict | None) -> None:
    """Refuse an unknown metric name or metric option before anything runs (names the key)."""
    for metric in configured(evaluate_options):
        options(metric, evaluate_options)


def reference_source(metric: type[Metric]) -> type[Metric] | None:
    """The metric whose reference data `metric` reads (itself, another one, or none)."""
    if metric.reference_of:
        return get(metric.reference_of)
    return metric if metric.has_reference() else None


def reference_metrics(evaluate_options: dict | None) -> list[str]:
    """Names of the metrics whose reference data the configured metrics need (sorted)."""
    needed = {source.name for metric in configured(evaluate_options)
              if (source := reference_source(metric)) is not None}
    return sorted(needed)


def input_files(evaluate_options: dict | None, speakers: Sequence[str] = ()) -> list[str]:
    """Files the configured metrics (and the metrics whose reference data they read) need; a
    per-speaker path ("{speaker}" in it) is listed once for each of `speakers`."""
    files: list[str] = []
    for metric in configured(evaluate_options):
        for source in {metric, reference_source(metric) or metric}:
            for template in source.inputs(options(source, evaluate_options)):
                paths = ([template.format(speaker=s) for s in speakers]
                         if "{speaker}" in template else [template])
                files.extend(path for path in paths if path not in files)
    return files


def protocols(evaluate_options: dict | None, n_samples: int | None = None) -> dict[str, dict]:
    """Protocol of every configured metric, with the sample count when known."""
    out = {}
    for metric in configured(evaluate_options):
        record = dict(metric.protocol(options(metric, evaluate_options)))
        if n_samples is not None:
            record["sample_count"] = n_samples
        out[metric.name] = record
    return out


def columns(evaluate_options: dict | None, level: str | None = None) -> list[tuple[str, Column]]:
    """(metric name, column) of every configured metric, optionally of one level only."""
    return [(metric.name, column) for metric in configured(evaluate_options)
            if level is None or metric.level == level for column in metric.columns]
