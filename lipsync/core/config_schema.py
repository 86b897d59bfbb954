"""The workflow config's JSON schema, generated: the Option tables of the modules that use each
section, the registered models and metrics, over the structure in
workflow/schemas/config.schema.yaml (what no table holds: free-form maps such as
`training.runs`, `evaluate.external`, `dub.pairs`). `validate` fills in every default and refuses
a bad value naming its config key (`video.fps: 0: must be greater than 0`) before planning.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import yaml

from lipsync.core import options as option_tables
from lipsync.core.errors import LipsyncError
from lipsync.core.options import Table

STRUCTURE = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigSchemaError(LipsyncError):
    """A config value the schema refuses; the message starts with its key as a config path."""


def section_tables() -> dict[str, Table]:
    """Config path -> the Option table that declares that section, from the module using it."""
    # Imported here, not at the top: each module is heavy and only planning needs all of them.
    from lipsync.analysis import agreement
    from lipsync.data import audio, corpus, faces, pack, samples, splits
    from lipsync.experts.lipread import train as lipread_train
    from lipsync.experts.sync import train as sync_train
    from lipsync.metrics import bootstrap, registry, score
    from lipsync.models import lipreader, syncnet
    from lipsync.models import registry as models
    from lipsync.report import figures
    from lipsync.tools import dub
    from lipsync.training import options as train_options

    tables = {"data": corpus.OPTIONS, "video": faces.VIDEO_OPTIONS, "faces": faces.FACES_OPTIONS,
              "audio": audio.AUDIO_OPTIONS, "samples": samples.OPTIONS,
              "splits": splits.OPTIONS, "dataset": pack.DATASET_OPTIONS,
              "training.options": train_options.OPTIONS,
              "syncnet.model": syncnet.OPTIONS, "syncnet.training": sync_train.OPTIONS,
              "lipreader.model": lipreader.OPTIONS, "lipreader.training": lipread_train.OPTIONS,
              "evaluate": score.OPTIONS, "evaluate.bootstrap": bootstrap.OPTIONS,
              "analysis.agreement": agreement.OPTIONS, "report": figures.OPTIONS,
              "dub": dub.DUB_OPTIONS}
    tables |= {f"training.models.{name}": models.option_table(name) for name in models.MODELS}
    # Sorted: the registry's order is the order its modules happened to be imported in.
    tables |= {f"evaluate.{name}": metric.option_table
               for name, metric in sorted(registry.load().items())}
    return tables


def json_schema() -> dict:
    """The whole config schema: the structure file with every table's section filled in."""
    from lipsync.metrics import registry
    from lipsync.models import registry as models

    schema = yaml.safe_load(STRUCTURE.read_text())
    metrics = registry.load()
    for path, table in section_tables().items():
        keys = path.split(".")
        parent = _node(schema, keys[:-1])
        metric = metrics.get(keys[-1]) if keys[:-1] == ["evaluate"] else None
        generated = option_tables.json_schema(table, metric.description if metric else None)
        existing = parent.setdefault("properties", {}).get(keys[-1], {})
        # The structure may add keys a table does not hold (evaluate.external): keep them.
        generated["properties"] = {**existing.get("properties", {}), **generated["properties"]}
        parent["properties"][keys[-1]] = {**existing, **generated}
    training = schema["properties"]["training"]["properties"]
    training["runs"]["additionalProperties"]["properties"]["model"] = {"enum": list(models.MODELS)}
    return schema


def _node(schema: dict, keys: list[str]) -> dict:
    """The object node at `keys`, created (closed, default {}) where the structure has none."""
    node = schema
    for key in keys:
        node = node.setdefault("properties", {}).setdefault(
            key, {"type": "object", "additionalProperties": False, "default": {}})
    return node


def validate(config: dict) -> None:
    """Fill in every default of `config` (in place) and raise ConfigSchemaError naming the key of
    the first bad value: table-declared options first (their messages state the range), then the
    structure."""
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigSchemaError(f"config: must be a mapping of sections, not {config!r}")
    schema = json_schema()
    for path, table in section_tables().items():
        values = _lookup(config, path.split("."))
        if values is None:
            continue
        # Keys the table does not declare but the schema does are subsections (evaluate.fid) or
        # structure (evaluate.external): the schema checks those.
        if isinstance(values, Mapping):
            others = set(_node(schema, path.split(".")).get("properties", {})) - set(table)
            unknown = sorted(set(values) - set(table) - others)
            if unknown:
                raise ConfigSchemaError(f"{path}: unknown option(s) {', '.join(unknown)}; known: "
                                        f"{', '.join(sorted(set(table) | others))}")
            values = {key: value for key, value in values.items() if key not in others}
        try:
            option_tables.check(table, values, path)
        except LipsyncError as error:
            raise ConfigSchemaError(str(error)) from None
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigSchemaError(_message(errors[0]))


def _lookup(config: Mapping, keys: list[str]):
    """The value at `keys` of the config as given, or None where the user set nothing."""
    value = config
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _with_defaults(validator_class):
    """A validator that first sets each missing property to a copy of its schema default (as
    snakemake.utils.validate does), so nested sections are filled in and then checked."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    import jsonschema

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _message(error) -> str:
    key = ".".join(str(part) for part in error.absolute_path) or "config"
    if error.validator == "additionalProperties" and "properties" in error.schema:
        known = error.schema["properties"]
        unknown = sorted(set(error.instance) - set(known))
        return f"{key}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
    return f"{key}: {error.message}"


def reference() -> str:
    """The config reference in Markdown: every table-declared option with its default and doc,
    section by section (docs/config.md is this text; a test keeps it current)."""
    lines = ["# Config reference", "",
             "Generated from the Option tables by `python -m lipsync.core.config_schema`; the structure",
             "(`training.runs`, `evaluate.external`, `analysis.defects`, `dub`) is",
             "documented in `workflow/schemas/config.schema.yaml`.", ""]
    for path, table in section_tables().items():
        lines += [f"## `{path}`", "", "| key | default | allowed | |", "|---|---|---|---|"]
        lines += _rows(table, "")
        lines.append("")
    return "\n".join(lines)


def _rows(table: Table, prefix: str) -> list[str]:
    rows = []
    for name, entry in table.items():
        if isinstance(entry, Mapping):
            rows += _rows(entry, f"{prefix}{name}.")
        else:
            doc = entry.doc.replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{prefix}{name}` | `{entry.default!r}` | {_allowed(entry)} | {doc} |")
    return rows


def _allowed(option: option_tables.Option) -> str:
    """What values an option takes, in a few words (`integer >= 1`, `'raw', 'compact'`)."""
    if option.one_of:
        words = ", ".join(f"`{value!r}`" for value in option.one_of)
    else:
        kind = option.items if option.kind is list else option.kind
        words = {int: "integer", float: "number", bool: "true/false", str: "string"}[kind]
        bounds = (("≥", option.minimum), (">", option.above), ("≤", option.maximum),
                  ("<", option.below))
        words += "".join(f" {sign} {value:g}" for sign, value in bounds if value is not None)
        if option.kind is list:
            words = f"list of {option.length or ''} {words}".replace("  ", " ")
    words += "".join(f", `{value!r}`" for value in option.choices)
    return words + (", null" if option.nullable else "")


if __name__ == "__main__":
    print(reference())
