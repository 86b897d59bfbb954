"""The config is checked before the workflow plans: every training and model option by its
table, run overrides routed by the model's own option names, model input shapes; and the schema's
defaults are the package's."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lipsync import train_options
from lipsync.config import ConfigError, check_config, run_options
from lipsync.models import registry

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def schema_defaults(node: dict) -> dict:
    """The defaults a schema object gives, nested objects expanded."""
    values = {}
    for name, child in node.get("properties", {}).items():
        if "properties" in child:
            values[name] = schema_defaults(child)
        elif "default" in child:
            values[name] = child["default"]
    return values


DEFAULT_CONFIG = schema_defaults(SCHEMA)


def config_with(**sections) -> dict:
    """The schema's default config with some sections' keys replaced (a nested update)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    for section, values in sections.items():
        config[section] = _merged(config[section], values)
    return config


def _merged(base, update):
    if not isinstance(base, dict) or not isinstance(update, dict):
        return update
    return {**base, **{k: _merged(base.get(k), v) for k, v in update.items()}}


def test_the_default_config_passes():
    check_config(DEFAULT_CONFIG)


@pytest.mark.parametrize(("section", "values", "key"), [
    ("training", {"options": {"batch_size": -8}}, "training.options.batch_size: -8"),
    ("training", {"options": {"total_samples": -16}}, "training.options.total_samples: -16"),
    ("training", {"options": {"batch_size": 0}}, "training.options.batch_size: 0"),
    ("training", {"options": {"checkpoint_every_samples": 0}},
     "training.options.checkpoint_every_samples: 0"),
    ("training", {"options": {"batch_size": "8"}}, "training.options.batch_size: '8'"),
    ("training", {"options": {"mixed_precision": "fp8"}}, "training.options.mixed_precision"),
    ("training", {"options": {"epochs": 3}}, "training.options: unknown option(s) epochs"),
    ("training", {"models": {"l1wgan_gp": {"n_critic": 0}}},
     "training.models.l1wgan_gp.n_critic: 0"),
    ("training", {"models": {"lipgan": {"betas": [0.9]}}}, "training.models.lipgan.betas"),
    ("training", {"models": {"lipgan": {"colour": 1}}},
     "training.models.lipgan: unknown option(s) colour"),
    ("faces", {"image_size": 64}, "faces.image_size: 64"),
    ("audio", {"n_mels": 64}, "audio.n_mels: 64"),
    ("samples", {"mel_window": 16}, "samples.mel_window: 16"),
    ("audio", {"win_length": 1024}, "audio.win_length: 1024"),
])
def test_a_bad_value_is_refused_naming_its_key(section, values, key):
    with pytest.raises(ConfigError) as error:
        check_config(config_with(**{section: values}))
    assert str(error.value).startswith(key)


def test_a_run_override_goes_to_the_model_by_its_option_names():
    config = config_with(training={"runs": {"x": {"model": "l1wgan_gp", "train_set": "small",
                                                  "n_critic": 3, "batch_size": 16}}})
    assert "n_critic" not in config["training"]["models"].get("l1wgan_gp", {})
    options = run_options(config, "x")
    assert options["model_options"] == {"n_critic": 3}
    assert options["batch_size"] == 16 and "n_critic" not in options
    check_config(config)


def test_an_unknown_run_override_is_refused_naming_it():
    config = config_with(training={"runs": {"x": {"model": "lipgan", "train_set": "small",
                                                  "n_critic": 3}}})  # a WGAN-GP option
    with pytest.raises(ConfigError, match=r"^training\.runs\.x\.n_critic: unknown option"):
        check_config(config)


def test_model_and_loop_option_names_do_not_overlap():
    # Routing a run's override by name is only unambiguous while no name is in both tables.
    for model in registry.MODELS:
        assert not set(registry.option_table(model)) & set(train_options.OPTIONS), model


def _module_defaults() -> dict:
    from lipsync.data import audio, faces, pack, samples, splits
    from lipsync.metrics import fid
    from lipsync.report import figures

    return {("audio",): audio.AUDIO_DEFAULTS, ("video",): faces.VIDEO_DEFAULTS,
            ("faces",): faces.FACES_DEFAULTS, ("samples",): samples.DEFAULTS,
            ("splits",): splits.DEFAULTS, ("dataset",): pack.DATASET_DEFAULTS,
            ("evaluate", "fid"): fid.DEFAULTS, ("report",): figures.DEFAULTS}


@pytest.mark.parametrize("path", list(_module_defaults()), ids=".".join)
def test_schema_defaults_equal_the_package_defaults(path):
    package = _module_defaults()[path]
    schema = DEFAULT_CONFIG
    for key in path:
        schema = schema[key]
    shared = set(package) & set(schema)
    assert {k: schema[k] for k in shared} == {k: package[k] for k in shared}
    # Every package default is configurable (the schema refuses unknown keys).
    assert set(package) <= set(schema), set(package) - set(schema)


def test_training_and_model_defaults_have_one_source():
    # The schema lists no training-loop or model option (so none can drift from the tables);
    # the tables are what check_config, training_loop and registry.build all read.
    training = SCHEMA["properties"]["training"]["properties"]
    assert "properties" not in training["options"]
    assert "properties" not in training["models"]
    assert train_options.DEFAULTS == {k: o.default for k, o in train_options.OPTIONS.items()}
    for model in registry.MODELS:
        assert registry.resolve_options(model) == registry.defaults(model)


def test_planning_with_a_bad_value_fails_before_the_dag_naming_the_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"training": {"options": {"batch_size": -8}}}))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(tmp_path),
         "--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "training.options.batch_size: -8: must be at least 1" in result.stdout + result.stderr
    assert "Job stats" not in result.stdout


def test_the_schema_names_exactly_the_registered_models():
    training = SCHEMA["properties"]["training"]["properties"]
    run_models = training["runs"]["additionalProperties"]["properties"]["model"]["enum"]
    assert set(run_models) == set(training["models"]["propertyNames"]["enum"]) == set(
        registry.MODELS)
