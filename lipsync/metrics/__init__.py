"""Metrics: one module per metric, the registry that dispatches them, per-metric scoring and the
merge into per-system tables, bootstrap intervals over clips."""
