"""The config is checked before the workflow plans: every section by the Option table of the
module that uses it (through the generated schema), run overrides routed by the model's own option
names, model input shapes; a bad value is refused naming its key as a config path."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lipsync.core import config_schema
from lipsync.core.config import ConfigError, check_config, run_options
from lipsync.core.config_schema import ConfigSchemaError, validate
from lipsync.core.options import Option
from lipsync.metrics import registry as metric_registry
from lipsync.metrics.base import Column, Metric
from lipsync.models import registry
from lipsync.training import options as train_options

REPO = Path(__file__).resolve().parents[1]


def default_config() -> dict:
    """Every default the generated schema fills into an empty config."""
    config: dict = {}
    validate(config)
    return config


DEFAULT_CONFIG = default_config()


def config_with(**sections) -> dict:
    """The default config with some sections' keys replaced (a nested update)."""
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
    assert config["training"]["models"]["l1wgan_gp"]["n_critic"] == 5  # the table's default
    options = run_options(config, "x")
    assert options["model_options"] == registry.defaults("l1wgan_gp") | {"n_critic": 3}
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


@pytest.mark.parametrize(("config", "message"), [
    ({"video": {"fps": 0}}, "video.fps: 0: must be greater than 0"),
    ({"audio": {"hop_length": 0}}, "audio.hop_length: 0: must be at least 1"),
    ({"audio": {"preemphasis": 1.0}}, "audio.preemphasis: 1.0: must be less than 1"),
    ({"video": 3}, "video: 3: must be a mapping of options"),
    ({"faces": {"detector": "mtcnn"}},
     "faces.detector: 'mtcnn': must be one of 'opencv', 'dlib', 's3fd'"),
    ({"faces": {"tracking": {"max_size_change": "a"}}},
     "faces.tracking.max_size_change: 'a': must be a number, not a str"),
    ({"faces": {"opencv": {"min_size": 0}}}, "faces.opencv.min_size: 0: must be at least 1"),
    ({"dataset": {"layout": "zip"}}, "dataset.layout: 'zip': must be one of 'raw', 'compact'"),
    ({"evaluate": {"kid": {"subsets": 0}}}, "evaluate.kid.subsets: 0: must be at least 1"),
    ({"evaluate": {"fid": {"dims": 100}}}, "evaluate.fid.dims: 100: must be one of 64, 192"),
    ({"evaluate": {"lse_public": {"weights": None}}}, None),
    ({"evaluate": {"batch_size": 0}}, "evaluate.batch_size: 0: must be at least 1"),
    ({"evaluate": {"metrics": ["fid", 3]}}, "evaluate.metrics: ['fid', 3]: item 3: must be a "
                                            "string"),
    ({"evaluate": {"colour": 1}}, "evaluate: unknown option(s) colour; known: batch_size, bootstrap"),
    ({"evaluate": {"bootstrap": {"confidence": 1}}},
     "evaluate.bootstrap.confidence: 1: must be less than 1"),
    ({"analysis": {"agreement": {"strip_frames": 0}}},
     "analysis.agreement.strip_frames: 0: must be at least 1"),
    ({"report": {"seed": "x"}}, "report.seed: 'x': must be an integer, not a str"),
    ({"syncnet": {"model": {"width": 0}}}, "syncnet.model.width: 0"),
    ({"training": {"runs": {"x": {"model": "lipgan2", "train_set": "small"}}}},
     "training.runs.x.model: 'lipgan2' is not one of ['lipgan', 'l1wgan_gp', 'wgan_gp']"),
    ({"training": {"models": {"lipgan2": {}}}}, "training.models: unknown key(s) lipgan2; known: l1wgan_gp, lipgan, wgan_gp"),
    ({"data": {"speakers": ["1"]}}, "data.speakers: ['1']: item '1': must match s[0-9]+"),
    ({"data": {"grid": {"retries": -1}}}, "data.grid.retries: -1: must be at least 0"),
    ({"colour": {}}, "config: unknown key(s) colour; known: analysis, audio, data"),
])
def test_the_schema_refuses_a_bad_value_naming_its_config_path(config, message):
    if message is None:
        validate(config)  # null is allowed where the table says so
        return
    with pytest.raises(ConfigSchemaError) as error:
        validate(config)
    assert str(error.value).startswith(message)
    assert "schema[" not in str(error.value) and "properties" not in str(error.value)


def test_every_default_comes_from_the_modules_tables():
    from lipsync.data import audio, faces

    config = default_config()
    assert config["audio"] == audio.AUDIO_DEFAULTS and config["faces"] == faces.FACES_DEFAULTS
    assert config["evaluate"]["metrics"] == list(metric_registry.DEFAULT_METRICS)
    assert config["training"]["options"] == train_options.DEFAULTS
    for name, metric in metric_registry.load().items():
        assert config["evaluate"][name] == metric.defaults, name


def test_the_generated_schema_names_exactly_the_registered_models():
    training = config_schema.json_schema()["properties"]["training"]["properties"]
    run_models = training["runs"]["additionalProperties"]["properties"]["model"]["enum"]
    assert run_models == list(registry.MODELS) == list(training["models"]["properties"])


class _Brightness(Metric):
    """Mean brightness difference (a metric registered by a test)."""


def test_a_metric_registered_with_its_table_gets_a_checked_config_section():
    metric_registry.register_metric(
        "brightness", level="frame", options={"scale": Option(1.0, float, "gain", above=0)},
        columns=(Column("brightness", "brightness difference", higher_is_better=False),),
    )(_Brightness)
    try:
        config: dict = {"evaluate": {"metrics": ["brightness"]}}
        validate(config)
        assert config["evaluate"]["brightness"] == {"scale": 1.0}
        with pytest.raises(ConfigSchemaError, match=r"^evaluate\.brightness\.scale: 0: must be "
                                                    r"greater than 0"):
            validate({"evaluate": {"brightness": {"scale": 0}}})
    finally:
        metric_registry.METRICS.pop("brightness")


def _plan(snakefile: Path, config: dict, tmp_path: Path, env: dict | None = None):
    """`snakemake -n` of `snakefile` with `config`, in tmp_path."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(tmp_path),
         "--snakefile", str(snakefile), "--configfile", str(config_file)],
        cwd=snakefile.parents[1], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize(("config", "message"), [
    ({"training": {"options": {"batch_size": -8}}},
     "training.options.batch_size: -8: must be at least 1"),
    ({"video": {"fps": 0}}, "video.fps: 0: must be greater than 0"),
])
def test_planning_with_a_bad_value_fails_before_the_dag_naming_the_key(tmp_path, config, message):
    result = _plan(REPO / "workflow" / "Snakefile", config, tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "schema['properties']" not in result.stdout + result.stderr
    assert "Job stats" not in result.stdout


MODEL_VARIANT = '''"""LipGAN with a tenfold adversarial weight: a model variant added as one module."""

from lipsync.models.lipgan import INPUT_SHAPE, build
from lipsync.models.lipgan import OPTIONS as LIPGAN_OPTIONS
from lipsync.core.options import Option

OPTIONS = {**LIPGAN_OPTIONS,
           "adversarial_weight": Option(0.1, float, "Ten times LipGAN's.", minimum=0)}
__all__ = ["INPUT_SHAPE", "OPTIONS", "build"]
'''
METRIC = '''"""Mean brightness difference of each generated frame: a metric added as one module."""

import numpy as np

from lipsync.metrics.base import Column, Metric, Result
from lipsync.metrics.registry import register_metric
from lipsync.core.options import Option

OPTIONS = {"scale": Option(1.0, float, "Gain applied to the difference.", above=0)}


@register_metric("brightness", level="frame", options=OPTIONS,
                 columns=(Column("brightness", "brightness difference", higher_is_better=False),))
class Brightness(Metric):
    """Mean brightness of the generated frame minus its ground truth's."""

    def update(self, batch):
        self.values = [*getattr(self, "values", []),
                       (batch.generated.mean((1, 2, 3)) - batch.real.mean((1, 2, 3)))
                       * self.options["scale"]]

    def result(self):
        return Result({"brightness": np.concatenate(self.values)})
'''


def _add_line_after(file: Path, anchor: str, line: str) -> None:
    text = file.read_text()
    assert anchor in text, (file, anchor)
    file.write_text(text.replace(anchor, anchor + line, 1))


def test_a_new_model_and_metric_are_one_module_and_one_registry_line_each(tmp_path):
    """The contract of docs/ARCHITECTURE.md, in a copy of the package and workflow: a model
    variant and a metric, each one module and one registry line, planned with no schema edit."""
    import shutil

    copy_root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake")
    for folder in ("lipsync", "workflow"):
        shutil.copytree(REPO / folder, copy_root / folder, ignore=ignore)
    (copy_root / "lipsync/models/lipgan_loud.py").write_text(MODEL_VARIANT)
    _add_line_after(copy_root / "lipsync/models/registry.py", "MODELS = {\n",
                    '    "lipgan_loud": "lipsync.models.lipgan_loud",\n')
    (copy_root / "lipsync/metrics/brightness.py").write_text(METRIC)
    _add_line_after(copy_root / "lipsync/metrics/registry.py", "MODULES = (\n",
                    '    "lipsync.metrics.brightness",\n')
    config = {"data": {"source": "synthetic", "speakers": ["s1"], "clips_per_speaker": 4},
              "splits": {"test": 1, "small": 3, "full": 3},
              "training": {"runs": {"loud-small": {"model": "lipgan_loud", "train_set": "small",
                                                   "adversarial_weight": 0.2}},
                           "models": {"lipgan_loud": {"width": 0.25}}},
              "evaluate": {"metrics": ["ssim", "brightness"], "brightness": {"scale": 2.0}},
              "analysis": {"defects": {}}}
    env = {**os.environ, "PYTHONPATH": str(copy_root)}
    work = tmp_path / "work"
    work.mkdir()
    result = _plan(copy_root / "workflow" / "Snakefile", config, work, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "run=loud-small" in result.stdout
    schema = "workflow/schemas/config.schema.yaml"
    assert (copy_root / schema).read_bytes() == (REPO / schema).read_bytes()
    # The same copy refuses the new metric's bad option before planning, naming it.
    config["evaluate"]["brightness"] = {"scale": 0}
    result = _plan(copy_root / "workflow" / "Snakefile", config, work, env)
    assert result.returncode != 0
    assert "evaluate.brightness.scale: 0: must be greater than 0" in result.stdout + result.stderr


def test_the_config_reference_is_generated_from_the_tables():
    # Regenerate with: python -m lipsync.core.config_schema > docs/config.md
    assert (REPO / "docs" / "config.md").read_text() == config_schema.reference() + "\n"
