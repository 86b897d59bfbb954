"""Model names -> modules. A new model is one module (OPTIONS, INPUT_SHAPE and build) and one
line below. Torch-free until `build`: the workflow checks model options when it plans."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lipsync.core import options as option_tables
from lipsync.core.errors import LipsyncError

if TYPE_CHECKING:
    from torch import nn

MODELS = {
    "lipgan": "lipsync.models.lipgan",
    "l1wgan_gp": "lipsync.models.l1wgan_gp",
    "wgan_gp": "lipsync.models.wgan_gp",
}


@dataclass
class ModelPair:
    """A generator, its discriminator or critic, and the loss scheme that trains them."""

    name: str
    options: dict
    generator: nn.Module
    discriminator: nn.Module
    scheme: object


def _module(name: str):
    if name not in MODELS:
        raise LipsyncError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return importlib.import_module(MODELS[name])


def option_table(name: str) -> dict[str, option_tables.Option]:
    """Every option of model `name`: default, type, range and why (its module's OPTIONS)."""
    return dict(_module(name).OPTIONS)


def defaults(name: str) -> dict:
    """The documented default options of model `name`."""
    return option_tables.defaults(option_table(name))


def input_shape(name: str) -> dict[str, int]:
    """The fixed input of model `name`'s networks: image_size, n_mels and mel_window."""
    return dict(_module(name).INPUT_SHAPE)


def resolve_options(name: str, options: dict | None = None, where: str | None = None) -> dict:
    """Defaults overlaid with `options`; an unknown key or a bad value is an error naming it."""
    return option_tables.resolve(option_table(name), options, where or f"{name} model_options")


def build(name: str, options: dict | None = None) -> ModelPair:
    """Build model `name` with `options` (missing keys take the module's defaults)."""
    return _module(name).build(resolve_options(name, options))
