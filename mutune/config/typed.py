"""Plain YAML data into typed dataclasses, naming the dotted key of every mistake.

The spec (:mod:`mutune.config.schema`) is a tree of dataclasses whose type hints are the schema: this
module checks a parsed YAML mapping against them (unknown keys with a "did you mean", wrong types,
values outside a ``Literal``, non-finite numbers, numbers outside a field's :class:`Range`), fills
defaults, and reads ``KEY=VALUE`` overrides and YAML files (UTF-8, no duplicate keys). It knows
nothing of what the fields mean. A section whose keys depend on one of its values (the model
section, whose keys are its family's) names its variant with a ``variant(data)`` classmethod.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import SpecError


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
        arms = [a for a in args if a is not type(None)]
        for a in arms:
            try:
                return coerce(a, value, key)
            except SpecError:
                if len(arms) == 1:  # `float | None`: the number's own message (e.g. not finite)
                    raise
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
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            return value  # (its range, and the ceiling every integer has, are checked in check_ranges)
        raise SpecError(key, f"expected an integer, got {value!r}")
    if tp is float:
        return _number(value, key)
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


def _number(value: Any, key: str) -> float:
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None:
        raise SpecError(key, f"expected a number, got {value!r}")
    if not math.isfinite(number):  # .nan passes every comparison check; .inf disables max_loss
        raise SpecError(key, f"expected a finite number, got {value!r}")
    return number


def build(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(key or "spec", f"expected a mapping, got {data!r}")
    if hasattr(cls, "variant"):  # e.g. the model section of data's family
        cls = cls.variant(data, key)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            raise SpecError(join_key(key, str(k)), unknown_key(cls, str(k), fields, key))
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(field_type(cls, f), data[name], join_key(key, name))
    return cls(**kwargs)


def unknown_key(cls: type, name: str, fields: Any, prefix: str) -> str:
    """The message for a key ``cls`` does not have: a "did you mean", or where the key belongs."""
    elsewhere = cls.elsewhere(name) if hasattr(cls, "elsewhere") else ""
    if elsewhere:
        return elsewhere
    hint = difflib.get_close_matches(name, list(fields), n=1)
    return f"unknown key{f' (did you mean {join_key(prefix, hint[0])!r}?)' if hint else ''}"


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
        value = load_bounded(raw, key) if raw.strip() else ""
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
    keys: list[str] = []
    for klass in [cls, *getattr(cls, "variants", lambda: [])()]:  # a section's variants' keys too
        for f in dataclasses.fields(klass):
            tp = field_type(klass, f)
            here = join_key(prefix, f.name)
            for k in leaf_keys(tp, here) if dataclasses.is_dataclass(tp) else [here]:
                if k not in keys:
                    keys.append(k)
    return keys


# ---------------------------------------------------------------------------------------------
# Ranges


INT_MAX = 2**31 - 1  # the largest integer any key takes (a seed, a count); sizes are bounded lower


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: ``Range(0, 1, high_open=True)`` is [0, 1)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (self.high is not None and (v > self.high or (self.high_open and v == self.high)))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        return (
            f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
            f"{')' if self.high_open else ']'}"
        )


def _num(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else f"{v:g}"


POSITIVE = Range(0, low_open=True)
SIZE = Range(1, 1 << 24)  # a width, a batch, a sequence length: 16M, far past any model trained today
DEPTH = Range(1, 1 << 16)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, low_open=True, high_open=True)
BETA = Range(0, 1, high_open=True)  # torch.optim refuses 1.0 (and anything outside)


def check_ranges(node: Any, prefix: str = "") -> None:
    """Every numeric field against its declared :class:`Range`, naming the dotted key; an integer
    without an upper bound of its own at most :data:`INT_MAX` (a seed or a count past it overflows
    torch's and numpy's, and runs nothing a person would wait for)."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), join_key(prefix, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key)
        valid = f.metadata.get("valid")
        if valid is not None and value is not None and value not in valid:
            raise SpecError(key, f"must be {valid}, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
            raise SpecError(key, f"must be at most {INT_MAX}, got {value}")


# ---------------------------------------------------------------------------------------------
# Reading YAML files


def read_yaml(path: str | Path, what: str = "spec") -> dict[str, Any]:
    """A YAML mapping from a file: UTF-8 text, no duplicate keys; each mistake names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), f"{what} file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is harmless
    except UnicodeDecodeError as e:
        bom = " (it starts with a UTF-16 byte-order mark)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        line = raw[: e.start].count(b"\n") + 1
        raise SpecError(
            str(path), f"is not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line}{bom}; save it as UTF-8"
        ) from None
    try:
        data = load_bounded(text, str(path), path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None)
        raise SpecError(str(path), f"invalid YAML{where}{': ' + problem if problem else ''}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(str(path), "expected a YAML mapping at the top level")
    return data


MAX_VALUES = 100_000  # values a YAML document may expand to (aliases counted every time they are used)


def load_bounded(text: str, where: str, path: Path | None = None) -> Any:
    """YAML text as data, refusing what would take unbounded time or memory: a document whose
    aliases expand it past :data:`MAX_VALUES` values (a "billion laughs": nine lines that expand to
    10^9 values, refused in milliseconds, before anything walks them) or one nested too deeply for
    the parser. ``path`` also refuses duplicate keys (a spec file's; see :func:`read_yaml`)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise SpecError(where, "is nested too deeply to be a spec") from None
    size = _expanded_size(node, {})
    if size > MAX_VALUES:
        raise SpecError(
            where,
            f"expands to {size:,} values through its YAML aliases (more than {MAX_VALUES:,}: an alias bomb?); "
            "refused",
        )
    if path is not None:
        _no_duplicate_keys(node, path)
    return yaml.safe_load(text)


def _expanded_size(node: yaml.Node | None, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised per node, so the
    count itself takes time linear in the document, not in its expansion)."""
    if node is None:
        return 0
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # (a node that contains itself counts once)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _no_duplicate_keys(node: yaml.Node | None, path: Path, prefix: str = "") -> None:
    """PyYAML keeps the last of two equal keys without a word; a spec with one is almost always a
    mistake (two ``lr:`` lines, the first forgotten), so it is refused, naming the key and both lines."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _no_duplicate_keys(item, path, f"{prefix}[{i}]")
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
        line = key_node.start_mark.line + 1
        if key in seen and isinstance(key_node, yaml.ScalarNode) and key != "<<":
            raise SpecError(
                join_key(prefix, key),
                f"duplicate key in {path} (line {line}; first on line {seen[key]}); keep one",
            )
        seen[key] = line
        _no_duplicate_keys(value_node, path, join_key(prefix, key))
