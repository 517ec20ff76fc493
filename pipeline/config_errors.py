"""pydantic's ValidationError, and a renamed key, as the one line every params.yaml error is.

The form is `<key> = <value> <what is wrong> (<what is allowed>)`, the key dotted as in params.yaml
(`ablation.rows[1]`). Nothing here knows the schema: each function is given its root dataclass (the
`Config` of pipeline/config.py, or one section of it) and reads the keys, their order, bounds and
choices from the pydantic fields.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}  # in the order today's messages list them
_OUT_OF_RANGE = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}
_UNKNOWN_KEY = {"unexpected_keyword_argument", "extra_forbidden"}
_EXPECTED = {
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a non-empty string",
    "string_too_short": "must be a non-empty string",
    "list_type": "must be a list",
}


def describe_first(error: ValidationError, root: type, key: str | None = None) -> str:
    """The first of pydantic's errors, in the order the file is read, as one line; `key` replaces the
    dotted key in the message."""
    first = min(error.errors(), key=lambda detail: _locate(root, detail["loc"])[0])
    return _describe(first, root, key)


def unknown_key(section: type, name: Any, prefix: str) -> str:
    """`unknown key 'a.b' (allowed under a: …)`: the keys the section does have, in declared order."""
    key = f"{prefix}.{name}" if prefix else str(name)
    return f"unknown key {key!r} (allowed under {prefix or 'the top level'}: {', '.join(_keys(section))})"


def renamed_key(old: str, new: str) -> str:
    """A key params.yaml no longer has because it was renamed: the line names the new key."""
    return f"key {old!r} is now {new!r} (renamed; same meaning and values)"


def internal_fields(section: type) -> list[str]:
    """Fields of a section that are not params.yaml keys (metadata internal=True, e.g. project_root)."""
    return [item.name for item in dataclasses.fields(section) if item.metadata.get("internal")]


def _describe(detail: ErrorDetails, root: type, key: str | None = None) -> str:
    """`<key> = <value> <what is wrong> (<what is allowed>)`, the form every params error has."""
    loc, value, kind = detail["loc"], detail["input"], detail["type"]
    key = key or _dotted(loc)
    info = _locate(root, loc)[1]
    if kind == "missing":
        return f"missing key {key!r}"
    if kind in _UNKNOWN_KEY or info is None:
        return unknown_key(_locate(root, loc[:-1])[1].annotation, loc[-1], prefix=_dotted(loc[:-1]))
    if kind in ("dataclass_type", "dataclass_exact_type"):
        return f"{key or 'the top level'} must be a mapping of keys, got {value!r}"
    if kind == "literal_error":
        choices = " | ".join(map(str, typing.get_args(info.annotation)))
        return f"{key} = {value!r} is not allowed (one of: {choices})"
    if kind in _OUT_OF_RANGE:
        bounds = {
            name: getattr(rule, name) for rule in info.metadata for name in _BOUNDS if hasattr(rule, name)
        }
        allowed = " and ".join(
            f"{symbol} {bounds[name]}" for name, symbol in _BOUNDS.items() if name in bounds
        )
        return f"{key} = {_as_loaded(value, info)!r} is out of range (allowed: {allowed})"
    if kind == "too_short":
        return f"{key} = {_as_loaded(value, info)!r} needs at least {detail['ctx']['min_length']} item(s)"
    return f"{key} = {value!r} {_EXPECTED.get(kind, detail['msg'].lower())}"


def _as_loaded(value: Any, info: FieldInfo) -> Any:
    """A valid value as the config holds it (an int given for a float is a float), for the message."""
    if info.annotation is float:
        return float(value)
    if typing.get_origin(info.annotation) is list:
        item = FieldInfo.from_annotation(typing.get_args(info.annotation)[0])
        return [_as_loaded(entry, item) for entry in value]
    return value


def _locate(root: type, loc: tuple[str | int, ...]) -> tuple[tuple[tuple[int, Any], ...], FieldInfo | None]:
    """The field at a pydantic error location (None for an unknown key), and its rank in the order the
    file is read: declared order, depth first, an unknown key before the keys beside it."""
    rank: list[tuple[int, Any]] = []
    info = FieldInfo.from_annotation(root)
    for part in loc:
        if typing.get_origin(info.annotation) is list:  # part: the index of an item
            rank.append((1, part))
            info = FieldInfo.from_annotation(typing.get_args(info.annotation)[0])
            continue
        keys = _keys(info.annotation)
        if part not in keys:
            return (*rank, (0, str(part))), None
        rank.append((1, list(keys).index(part)))
        info = keys[part]
    return tuple(rank), info


def _keys(section: type) -> dict[str, FieldInfo]:
    """The keys params.yaml holds for a section, in declared order."""
    internal = internal_fields(section)
    return {name: info for name, info in section.__pydantic_fields__.items() if name not in internal}


def _dotted(loc: tuple[str | int, ...]) -> str:
    """('ablation', 'rows', 1) → 'ablation.rows[1]'."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc if part != "").lstrip(
        "."
    )
