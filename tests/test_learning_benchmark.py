"""benchmarks/learning.py: matched generator steps, learning curves, the results JSON and the
README table made from it, on a tiny synthetic subset."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from lipsync.core.errors import LipsyncError
from lipsync.data.subset import synthetic_subset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("learning_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _study(tmp_path, models, argv=()):
    learning = _benchmark()
    synthetic_subset(tmp_path / "data", train_clips=1, test_clips=1, frames=40)
    sys_argv = sys.argv
    sys.argv = ["learning.py", "--train-set", str(tmp_path / "data" / "train.h5"),
                "--test-set", str(tmp_path / "data" / "test.h5"), "--generator-steps", "2",
                "--curve-points", "2", "--width", "0.0625", "--batch-size", "4",
                "--curve-samples", "4", "--test-samples", "8", "--workers", "0",
                "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                "--models", *models, *argv]
    try:
        learning.main()
    finally:
        sys.argv = sys_argv
    return learning, json.loads((tmp_path / "out" / "learning.json").read_text())


def test_every_model_gets_the_same_generator_steps_and_a_wgan_step_is_n_critic_batches(tmp_path):
    learning, results = _study(tmp_path, ["lipgan", "l1wgan_gp:n_critic=2"])
    lipgan, wgan = results["runs"]
    assert lipgan["generator_steps"] == wgan["generator_steps"] == 2
    assert (lipgan["batches"], wgan["batches"]) == (2, 4)
    assert wgan["model_options"]["n_critic"] == 2
    # one validation point per chunk, counted in generator steps
    assert [p["generator_step"] for p in wgan["curve"]] == [1, 2]
    assert {"wasserstein", "gradient_penalty", "g_l1"} <= set(wgan["losses"][-1])
    assert results["identity"]["samples"] == lipgan["final"]["samples"] == 8
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert table == learning.markdown_table(results)
    assert "| l1wgan_gp n_critic=2 | 2 | 4 |" in table
    assert "| identity copy (reference frame) |" in table


def test_a_run_extended_to_more_steps_keeps_its_curve_and_whole_wall_time(tmp_path):
    _, first = _study(tmp_path, ["lipgan"])
    _, longer = _study(tmp_path, ["lipgan"], ["--generator-steps", "4"])
    before, after = first["runs"][0], longer["runs"][0]
    assert after["generator_steps"] == 4
    assert [p["generator_step"] for p in after["curve"]] == [1, 2, 4]
    assert after["wall_seconds"] >= before["wall_seconds"]


def test_a_model_option_that_does_not_exist_is_refused_by_name():
    learning = _benchmark()
    with pytest.raises(LipsyncError, match="n_critics"):
        learning.parse_run("l1wgan_gp:n_critics=1")
    assert learning.parse_run("l1wgan_gp:l1_weight=10")[2] == {"l1_weight": 10}


def test_combining_studies_with_different_settings_is_refused(tmp_path):
    learning = _benchmark()
    base = {"settings": {"width": 0.25}, "identity": {"ssim": 0.8}, "runs": [{"label": "a"}]}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps({**base, "settings": {"width": 0.5}}))
    with pytest.raises(LipsyncError, match="b.json"):
        learning.combine([str(tmp_path / "a.json"), str(tmp_path / "b.json")], tmp_path / "out")


def test_logged_generator_losses_of_a_wgan_run_average_over_generator_steps_only():
    # n_critic 2: the generator loss exists on every second batch; the log must not halve it
    from lipsync.training.loop import _LossMeter

    meter = _LossMeter()
    meter.add({"c_loss": 1.0})
    meter.add({"c_loss": 3.0, "g_l1": 0.2})

    class Run:
        step, samples = 2, 8

    record = meter.record(Run, epoch=0, batch_size=4)
    assert record["g_l1"] == pytest.approx(0.2)
    assert record["c_loss"] == pytest.approx(2.0)
