"""Plumbing every stage shares: errors, atomic output, logs, progress, provenance, option tables,
the config schema and check, the workflow's code hashes and stale locks, the device rule."""
