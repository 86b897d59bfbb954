"""Checks of the whole workflow config that its JSON schema cannot express, run before the DAG is
planned, after lipsync.core.config_schema.validate has filled in every default: run overrides routed to
the model or the loop and checked against their tables, each model's fixed input shape against the
data settings, relations between audio settings. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping

from lipsync.core import options as option_tables
from lipsync.core.errors import LipsyncError
from lipsync.models import registry
from lipsync.training.options import OPTIONS as LOOP_OPTIONS

# Keys of a training.runs entry that are not options: what the run trains on which split.
RUN_KEYS = ("model", "train_set")


class ConfigError(LipsyncError):
    """A config value the workflow refuses before planning; the message names its key."""


def check_config(config: Mapping) -> None:
    """Raise ConfigError naming the key of the first bad value of a schema-validated config."""
    try:
        _check_audio(config["audio"])
        training = config["training"]
        option_tables.check(LOOP_OPTIONS, training["options"], "training.options")
        for model, values in training["models"].items():
            _known_model(model, f"training.models.{model}")
            option_tables.check(registry.option_table(model), values, f"training.models.{model}")
        for run in training["runs"]:
            options = run_options(config, run)
            _check_input_shape(config, run, options["model"])
    except ConfigError:
        raise
    except LipsyncError as error:
        raise ConfigError(str(error)) from None


def run_options(config: Mapping, run: str) -> dict:
    """Training options of one run: shared options, the model's options, then the run's overrides.

    An override goes to the model when the model's option table has the key (`n_critic`,
    `learning_rate`, ...), else to the training loop when its table has it (`batch_size`, ...);
    `model_options: {...}` overrides several model options at once. Anything else is an error
    naming `training.runs.<run>.<key>`. The result is checked value by value.
    """
    spec = dict(config["training"]["runs"][run])
    where = f"training.runs.{run}"
    model = spec.pop("model")
    _known_model(model, f"{where}.model")
    spec.pop("train_set", None)
    model_table = registry.option_table(model)
    model_options = dict(config["training"]["models"].get(model, {}))
    loop_options = dict(config["training"]["options"])
    for key, value in spec.items():
        if key == "model_options":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.model_options: {value!r}: must be a mapping")
            option_tables.check(model_table, value, f"{where}.model_options")
            model_options.update(value)
        elif key in model_table:
            model_options[key] = value
        elif key in LOOP_OPTIONS:
            loop_options[key] = value
        else:
            raise ConfigError(
                f"{where}.{key}: unknown option: neither a training-loop option "
                f"({', '.join(sorted(LOOP_OPTIONS))}) nor an option of model {model} "
                f"({', '.join(sorted(model_table))})")
    option_tables.check(model_table, model_options, f"{where} (model {model})")
    option_tables.check(LOOP_OPTIONS, loop_options, f"{where} (training loop)")
    return {"model": model, "model_options": model_options, **loop_options}


def _known_model(model: str, where: str) -> None:
    if model not in registry.MODELS:
        raise ConfigError(f"{where}: unknown model {model!r}; known: {', '.join(registry.MODELS)}")


def _check_input_shape(config: Mapping, run: str, model: str) -> None:
    """The model's networks take fixed shapes: the faces, mels and windows must match them."""
    shape = registry.input_shape(model)
    have = {"faces.image_size": config["faces"]["image_size"],
            "audio.n_mels": config["audio"]["n_mels"],
            "samples.mel_window": config["samples"]["mel_window"]}
    wanted = {"faces.image_size": shape["image_size"], "audio.n_mels": shape["n_mels"],
              "samples.mel_window": shape["mel_window"]}
    for key, value in have.items():
        if value != wanted[key]:
            raise ConfigError(
                f"{key}: {value!r}: model {model} (training.runs.{run}) takes "
                f"{shape['image_size']}x{shape['image_size']} faces and {shape['n_mels']}x"
                f"{shape['mel_window']} mel windows, so {key} must be {wanted[key]}")


def _check_audio(audio: Mapping) -> None:
    """Relations between audio settings (the schema checks each value alone)."""
    if audio["win_length"] > audio["n_fft"]:
        raise ConfigError(f"audio.win_length: {audio['win_length']}: must be at most "
                          f"audio.n_fft ({audio['n_fft']})")
    if not audio["fmin"] < audio["fmax"] <= audio["sample_rate"] / 2:
        raise ConfigError(f"audio.fmax: {audio['fmax']}: must lie above audio.fmin "
                          f"({audio['fmin']}) and at most half of audio.sample_rate "
                          f"({audio['sample_rate']})")
