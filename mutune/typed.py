"""Plain YAML data into typed dataclasses, naming the dotted key of every mistake.

The spec (:mod:`mutune.config`) is a tree of dataclasses whose type hints are the schema: this
module checks a parsed YAML mapping against them (unknown keys with a "did you mean", wrong types,
values outside a ``Literal``), fills defaults, and reads ``KEY=VALUE`` overrides. It knows nothing
of what the fields mean.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

import yaml

from .errors import SpecError


def field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(a, value, key)
            except SpecError:
                continue
        raise SpecError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise SpecError(key, f"expected one of {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(key, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise SpecError(key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SpecError(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise SpecError(key, f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise SpecError(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise SpecError(key, f"expected a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(key, f"expected a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    raise AssertionError(f"unsupported spec type {tp!r} at {key}")


def build(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(key or "spec", f"expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            hint = difflib.get_close_matches(str(k), fields, n=1)
            suggestion = f" (did you mean '{join_key(key, hint[0])}'?)" if hint else ""
            raise SpecError(join_key(key, str(k)), f"unknown key{suggestion}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(field_type(cls, f), data[name], join_key(key, name))
    return cls(**kwargs)


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_override(token: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value); the value is read as YAML (``1e-3``, ``true``, ``[1, 2]``)."""
    if "=" not in token:
        raise SpecError(token, "expected KEY=VALUE")
    key, raw = token.split("=", 1)
    key = key.strip()
    if not key:
        raise SpecError(token, "empty key in KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way (unknown keys fail later, in build)."""
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(".".join(parts[: i + 1]), f"is not a section; cannot set '{key}'")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for token in overrides:
        key, value = parse_override(token)
        set_dotted(data, key, value)
    return data


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a spec dataclass (``model.width``, ``train.steps``...), sections walked."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = field_type(cls, f)
        here = join_key(prefix, f.name)
        keys += leaf_keys(tp, here) if dataclasses.is_dataclass(tp) else [here]
    return keys
