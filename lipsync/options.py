"""Option tables: one annotated entry (default, type, range, doc) per option of a function.

Models and the training loop keep their options in such a table; defaults, the checks of a direct
Python call and the checks of the config before the workflow is planned all read it. Torch-free,
so the workflow can import it at DAG-build time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lipsync.errors import LipsyncError

_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          list: "a list"}


@dataclass(frozen=True)
class Option:
    """One option: its default, what values it takes and why it has that default.

    `kind` is int, float (ints accepted), bool, str or list; `minimum`/`maximum` bound numbers
    (and list items), `above` is an exclusive lower bound; `choices` lists values allowed besides
    those of `kind` (mixed_precision: true/false or "bf16"/"fp16"); `length` fixes a list's length;
    `nullable` allows None.
    """

    default: Any
    kind: type
    doc: str
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    length: int | None = None
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None when it is."""
        if value is None:
            return None if self.nullable else "must not be null"
        if self.choices and any(value == c and type(value) is type(c) for c in self.choices):
            return None
        if self.kind is list:
            if not isinstance(value, list | tuple):
                return self._expected(value)
            if self.length is not None and len(value) != self.length:
                return f"must be a list of {self.length} numbers"
            for item in value:
                problem = self._number_problem(item)
                if problem:
                    return f"item {item!r}: {problem}"
            return None
        if self.kind in (int, float):
            return self._number_problem(value)
        if not isinstance(value, self.kind):
            return self._expected(value)
        return None

    def _number_problem(self, value: Any) -> str | None:
        integer = self.kind is int
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
        return None

    def _expected(self, value: Any, kind: str | None = None) -> str:
        wanted = [kind or _KINDS.get(self.kind, self.kind.__name__)]
        wanted += [repr(c) for c in self.choices]
        return f"must be {' or '.join(wanted)}, not a {type(value).__name__}"


def defaults(table: Mapping[str, Option]) -> dict:
    """The default value of every option of `table`."""
    return {name: option.default for name, option in table.items()}


def check(table: Mapping[str, Option], values: Mapping[str, Any], where: str) -> None:
    """Raise LipsyncError naming `where.key` for an unknown key or a value out of range."""
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise LipsyncError(f"{where}: unknown option(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(table))}")
    for name, value in values.items():
        problem = table[name].problem(value)
        if problem:
            raise LipsyncError(f"{where}.{name}: {value!r}: {problem}")


def resolve(table: Mapping[str, Option], values: Mapping[str, Any] | None, where: str) -> dict:
    """Defaults overlaid with checked `values`."""
    values = dict(values or {})
    check(table, values, where)
    return defaults(table) | values


def describe(table: Mapping[str, Option]) -> str:
    """A plain-text list of the options: name, default and doc (for --help and the docs)."""
    return "\n".join(f"{name} (default {option.default!r}): {option.doc}"
                     for name, option in table.items())
