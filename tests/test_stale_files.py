"""What a killed job or a killed snakemake leaves behind is cleared at the next run: hidden
temporaries of an output, and Snakemake's locks."""

from __future__ import annotations

import os

from lipsync.core.io import remove_stale_temporaries, write_text
from lipsync.core.stale_locks import hold_run_lock

DEAD_PID = 4_194_305  # above Linux's largest pid (pid_max is at most 2**22)


def test_the_next_write_removes_a_killed_writers_temporaries_only(tmp_path):
    output = tmp_path / "0.h5"
    killed = tmp_path / f".0.h5.{DEAD_PID}-a1b2c3.tmp"
    older = tmp_path / ".0.h5.x9y8z7.tmp"  # named before temporaries carried a pid
    live = tmp_path / f".0.h5.{os.getpid()}-d4e5f6.tmp"
    other = tmp_path / f".1.h5.{DEAD_PID}-a1b2c3.tmp"  # another output's
    for path in (killed, older, live, other):
        path.write_bytes(b"partial")
    write_text(output, "done")
    assert output.read_text() == "done"
    assert not killed.exists() and not older.exists()
    assert live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "1.h5") == [other]


def test_a_killed_snakemakes_locks_are_removed(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("results/x")
    warnings = []
    handle = hold_run_lock(tmp_path / ".snakemake", warn=warnings.append)
    try:
        assert not locks.exists() and "killed" in warnings[0]
    finally:
        handle.close()


def test_a_running_snakemakes_locks_are_kept(tmp_path):
    state = tmp_path / ".snakemake"
    running = hold_run_lock(state, warn=print)  # the snakemake already running here
    try:
        (state / "locks").mkdir()
        (state / "locks" / "0.input.lock").write_text("results/x")
        second = hold_run_lock(state, warn=print)
        assert (state / "locks" / "0.input.lock").exists()
        second.close()
    finally:
        running.close()
