"""Option tables: one annotated entry (default, type, range, doc) per option of a function.

Every config section is declared by such a table in the module that uses it (a table may nest
tables, as `faces.tracking`); defaults, the checks of a direct Python call, the JSON schema the
workflow validates with and the config reference all read it. Torch-free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from lipsync.core.errors import LipsyncError

_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          list: "a list"}
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", list: "array"}


@dataclass(frozen=True)
class Option:
    """One option: its default, what values it takes and why it has that default.

    `kind` is int, float (ints accepted), bool, str or list; `minimum`/`maximum` bound numbers
    (and list items), `above` and `below` are exclusive bounds; `choices` lists values allowed besides
    those of `kind` (mixed_precision: true/false or "bf16"/"fp16"); `one_of` lists the only values
    allowed (faces.detector); `length` fixes a list's length, `items` its items' kind (numbers
    unless said); `pattern` is a regular expression strings (and string items) must match;
    `nullable` allows None.
    """

    default: Any
    kind: type
    doc: str
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None
    choices: tuple = ()
    length: int | None = None
    nullable: bool = False
    one_of: tuple = ()
    items: type = float
    pattern: str | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None when it is."""
        if value is None:
            return None if self.nullable else "must not be null"
        if self.choices and any(value == c and type(value) is type(c) for c in self.choices):
            return None
        if self.one_of and not any(value == c and type(value) is type(c) for c in self.one_of):
            return f"must be one of {', '.join(repr(c) for c in self.one_of)}"
        if self.kind is list:
            return self._list_problem(value)
        return self._scalar_problem(value, self.kind)

    def _list_problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return self._expected(value)
        if self.length is not None and len(value) != self.length:
            return f"must be a list of {self.length} items"
        for item in value:
            problem = self._scalar_problem(item, self.items)
            if problem:
                return f"item {item!r}: {problem}"
        return None

    def _scalar_problem(self, value: Any, kind: type) -> str | None:
        if kind in (int, float):
            return self._number_problem(value, kind)
        if not isinstance(value, kind):
            return self._expected(value, _KINDS.get(kind))
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"must match {self.pattern}"
        return None

    def _number_problem(self, value: Any, kind: type) -> str | None:
        integer = kind is int
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            return self._expected(value, "an integer" if integer else "a number")
        if not math.isfinite(value):
            return "must be finite"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum:g}"
        if self.above is not None and value <= self.above:
            return f"must be greater than {self.above:g}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum:g}"
        if self.below is not None and value >= self.below:
            return f"must be less than {self.below:g}"
        return None

    def _expected(self, value: Any, kind: str | None = None) -> str:
        wanted = [kind or _KINDS.get(self.kind, self.kind.__name__)]
        wanted += [repr(c) for c in self.choices]
        return f"must be {' or '.join(wanted)}, not a {type(value).__name__}"

    def json_schema(self) -> dict:
        """This option as a JSON-schema property (type, bounds, enum, default, description)."""
        node: dict = {"description": self.doc, "default": self.default}
        if self.one_of:
            node["enum"] = list(self.one_of)
        else:
            node.update(_type_schema(self, self.kind))
            if self.kind is list:
                node["items"] = _type_schema(self, self.items)
                if self.length is not None:
                    node["minItems"] = node["maxItems"] = self.length
        if self.choices:
            node = {"description": node.pop("description"), "default": node.pop("default"),
                    "anyOf": [node, {"enum": list(self.choices)}]}
        if self.nullable:
            node = {"description": node.pop("description"), "default": node.pop("default"),
                    "anyOf": [node, {"type": "null"}]}
        return node


def _type_schema(option: Option, kind: type) -> dict:
    node: dict = {"type": _JSON_TYPES[kind]}
    if kind in (int, float):
        bounds = {"minimum": option.minimum, "exclusiveMinimum": option.above,
                  "maximum": option.maximum, "exclusiveMaximum": option.below}
        node.update({key: bound for key, bound in bounds.items() if bound is not None})
    elif kind is str and option.pattern is not None:
        node["pattern"] = f"^(?:{option.pattern})$"
    return node


# A table maps option names to Options, or to nested tables (config subsections).
Table = Mapping[str, Union[Option, "Table"]]


def defaults(table: Table) -> dict:
    """The default value of every option of `table` (nested tables as nested dicts)."""
    return {name: defaults(entry) if isinstance(entry, Mapping) else entry.default
            for name, entry in table.items()}


def check(table: Table, values: Mapping[str, Any], where: str) -> None:
    """Raise LipsyncError naming `where.key` for an unknown key or a value out of range."""
    if not isinstance(values, Mapping):
        raise LipsyncError(f"{where}: {values!r}: must be a mapping of options")
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise LipsyncError(f"{where}: unknown option(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(table))}")
    for name, value in values.items():
        entry = table[name]
        if isinstance(entry, Mapping):
            check(entry, value, f"{where}.{name}")
            continue
        problem = entry.problem(value)
        if problem:
            raise LipsyncError(f"{where}.{name}: {value!r}: {problem}")


def resolve(table: Table, values: Mapping[str, Any] | None, where: str) -> dict:
    """Defaults overlaid with checked `values` (nested tables merged key by key)."""
    values = dict(values or {})
    check(table, values, where)
    return _overlay(defaults(table), values)


def _overlay(base: dict, values: Mapping) -> dict:
    merged = dict(base)
    for name, value in values.items():
        nested = isinstance(base.get(name), dict) and isinstance(value, Mapping)
        merged[name] = _overlay(base[name], value) if nested else value
    return merged


def json_schema(table: Table, doc: str | None = None) -> dict:
    """A closed JSON-schema object for `table`: what the workflow validates a section with."""
    node: dict = {"type": "object", "additionalProperties": False, "default": {},
                  "properties": {name: json_schema(entry) if isinstance(entry, Mapping)
                                 else entry.json_schema() for name, entry in table.items()}}
    if doc:
        node = {"description": doc, **node}
    return node


def describe(table: Table, prefix: str = "") -> str:
    """A plain-text list of the options: name, default and doc (for --help and the docs)."""
    lines = []
    for name, entry in table.items():
        if isinstance(entry, Mapping):
            lines.append(describe(entry, f"{prefix}{name}."))
        else:
            lines.append(f"{prefix}{name} (default {entry.default!r}): {entry.doc}")
    return "\n".join(lines)
