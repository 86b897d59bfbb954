"""Option tables: nested tables resolve and check key by key, and the JSON schema generated from a
table accepts exactly the values the table's own checks accept."""

from __future__ import annotations

import jsonschema
import pytest

from lipsync.core import options as option_tables
from lipsync.core.errors import LipsyncError
from lipsync.core.options import Option

TABLE = {
    "count": Option(3, int, "an integer from 1", minimum=1),
    "ratio": Option(0.5, float, "a number in (0, 1)", above=0, below=1),
    "mode": Option("a", str, "one of two words", one_of=("a", "b")),
    "precision": Option(True, bool, "a flag or a named choice", choices=("bf16",)),
    "path": Option(None, str, "a string or null", nullable=True),
    "betas": Option([0.9, 0.99], list, "two numbers in [0, 1]", minimum=0, maximum=1, length=2),
    "speakers": Option(["s1"], list, "speaker ids", items=str, pattern=r"s[0-9]+"),
    "nested": {"size": Option(2, int, "a nested integer", minimum=0)},
}

# (key, value, accepted). Not listed: 2.0 for an integer, which JSON Schema counts as an integer
# and the table refuses (validate runs the table's checks first, so 2.0 is refused).
VALUES = [
    ("count", 1, True), ("count", 0, False), ("count", "2", False), ("count", True, False),
    ("ratio", 1, False), ("ratio", 0.999, True), ("ratio", 0, False),
    ("mode", "b", True), ("mode", "c", False),
    ("precision", False, True), ("precision", "bf16", True), ("precision", "fp8", False),
    ("path", None, True), ("path", "x", True), ("path", 3, False),
    ("betas", [0.0, 1.0], True), ("betas", [0.5], False), ("betas", [0.5, 2], False),
    ("speakers", ["s12"], True), ("speakers", ["x1"], False), ("speakers", [1], False),
    ("nested", {"size": 0}, True), ("nested", {"size": -1}, False), ("nested", {"sise": 1}, False),
]


@pytest.mark.parametrize(("key", "value", "accepted"), VALUES)
def test_the_generated_schema_accepts_what_the_table_accepts(key, value, accepted):
    schema = option_tables.json_schema(TABLE)
    schema_accepts = jsonschema.Draft202012Validator(schema).is_valid({key: value})
    try:
        option_tables.check(TABLE, {key: value}, "section")
        table_accepts = True
    except LipsyncError:
        table_accepts = False
    assert schema_accepts == table_accepts == accepted


def test_nested_tables_resolve_key_by_key_and_name_the_nested_key():
    resolved = option_tables.resolve(TABLE, {"nested": {"size": 5}}, "section")
    assert resolved["nested"] == {"size": 5} and resolved["count"] == 3
    with pytest.raises(LipsyncError, match=r"^section\.nested\.size: -1: must be at least 0$"):
        option_tables.resolve(TABLE, {"nested": {"size": -1}}, "section")
    with pytest.raises(LipsyncError, match=r"^section\.nested: unknown option\(s\) sise"):
        option_tables.resolve(TABLE, {"nested": {"sise": 1}}, "section")
    assert option_tables.defaults(TABLE)["nested"] == {"size": 2}
