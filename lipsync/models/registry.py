"""Model names -> modules. A new model is one module (DEFAULTS + build) and one line below."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from torch import nn

from lipsync.errors import LipsyncError

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


def defaults(name: str) -> dict:
    """The documented default options of model `name` (its module's DEFAULTS)."""
    return dict(_module(name).DEFAULTS)


def resolve_options(name: str, options: dict | None = None) -> dict:
    """Defaults overlaid with `options`; an unknown key is an error naming it."""
    resolved = defaults(name)
    unknown = sorted(set(options or {}) - set(resolved))
    if unknown:
        raise LipsyncError(f"model {name!r} has no option(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(resolved))}")
    resolved.update(options or {})
    return resolved


def build(name: str, options: dict | None = None) -> ModelPair:
    """Build model `name` with `options` (missing keys take the module's DEFAULTS)."""
    return _module(name).build(resolve_options(name, options))
