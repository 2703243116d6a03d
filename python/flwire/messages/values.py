"""Python values <-> ``flwire.v1.Value``: typed metrics, configs and extensions.

Integers stay integers, floats stay floats, and nested lists and string-keyed
dicts of scalars keep their shape. Anything else is refused with the path of
the offending entry, so nothing is silently turned into a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flwire.exceptions import SerializationException
from flwire.v1 import values_pb2

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

PyValue = Any  # None | bool | int | float | str | bytes | list[PyValue] | dict[str, PyValue]


#: Protobuf parsers refuse messages nested deeper than 100 levels. A nested
#: dict costs 3 of them (Value, ValueMap, map entry), a list 2 (Value,
#: ValueList), and the messages around a value up to 5 more, so a value may
#: nest at most this deep: 30 levels of dicts, or 45 of lists.
MAX_DEPTH = 90


def to_value(obj: PyValue, out: values_pb2.Value, path: str = "value", depth: int = 0) -> None:
    """Write a Python value into ``out`` (a Value message)."""
    if depth > MAX_DEPTH:
        raise SerializationException(
            f"{path}: nested too deeply for protobuf parsers (over 30 levels of dicts or 45 of "
            "lists), or a list/dict that contains itself"
        )
    if obj is None:
        out.null_value = 0
    elif isinstance(obj, (bool, np.bool_)):
        out.bool_value = bool(obj)
    elif isinstance(obj, (int, np.integer)):
        if not _INT64_MIN <= int(obj) <= _INT64_MAX:
            raise SerializationException(f"{path}: integer {obj} does not fit in 64 bits")
        out.int_value = int(obj)
    elif isinstance(obj, (float, np.floating)):
        out.double_value = float(obj)
    elif isinstance(obj, str):
        out.string_value = obj
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.bytes_value = bytes(obj)
    elif isinstance(obj, Mapping):
        out.map_value.SetInParent()
        fill_value_map(obj, out.map_value.fields, path, depth + 3)
    elif isinstance(obj, (list, tuple)):
        out.list_value.SetInParent()
        values = out.list_value.values
        for i, item in enumerate(obj):
            to_value(item, values.add(), f"{path}[{i}]", depth + 2)
    elif _is_scalar_tensor(obj):
        to_value(obj.item(), out, path, depth)
    else:
        raise SerializationException(
            f"{path}: cannot carry a {type(obj).__name__}; use None, bool, int, float, str, "
            "bytes, or lists / str-keyed dicts of those"
        )


def _is_scalar_tensor(obj: Any) -> bool:
    numel = getattr(obj, "numel", None)
    return callable(numel) and hasattr(obj, "item") and numel() == 1


def fill_value_map(obj: Mapping[Any, PyValue], target: Any, path: str, depth: int = 0) -> None:
    """Fill a ``map<string, Value>`` field from a str-keyed mapping."""
    if not isinstance(obj, Mapping):
        raise SerializationException(
            f"{path}: expected a dict with str keys, got a {type(obj).__name__} ({obj!r:.60})"
        )
    for key, item in obj.items():
        if not isinstance(key, str):
            raise SerializationException(f"{path}: keys must be str, got {key!r}")
        to_value(item, target[key], f"{path}[{key!r}]", depth)


def from_value(value: values_pb2.Value) -> PyValue:
    """The Python value a Value message holds."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    if kind == "map_value":
        return value_map_to_dict(value.map_value.fields)
    return getattr(value, kind)


def value_map_to_dict(fields: Any) -> dict[str, PyValue]:
    """A ``map<string, Value>`` field as a plain dict."""
    return {key: from_value(fields[key]) for key in fields}
