"""Random nested Python values survive Value encoding with their exact types."""

from __future__ import annotations

import copy
import math
import struct

from helpers import values_equal
from hypothesis import given
from hypothesis import strategies as st
from strategies import py_values

from flwire.messages.values import fill_value_map, from_value, to_value
from flwire.v1 import values_pb2

values = py_values(max_leaves=16, max_size=4)


def same(a, b) -> bool:
    """Types equal, floats bit-equal (NaN to any NaN), containers element-wise."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@given(values)
def test_value_round_trip_keeps_types(obj):
    value = values_pb2.Value()
    to_value(obj, value)
    back = from_value(values_pb2.Value.FromString(value.SerializeToString()))
    assert same(back, obj)
    assert values_equal(back, obj)


@given(st.dictionaries(st.text(max_size=8), values, max_size=5))
def test_value_map_round_trip(obj):
    fields = values_pb2.ValueMap()
    fill_value_map(obj, fields.fields, "metrics")
    parsed = values_pb2.ValueMap.FromString(fields.SerializeToString())
    back = {key: from_value(parsed.fields[key]) for key in parsed.fields}
    assert same(back, obj)


@given(values, values)
def test_values_equal_agrees_with_a_strict_comparison(a, b):
    assert values_equal(a, copy.deepcopy(a))
    if not _has_signed_zero(a) and not _has_signed_zero(b):
        # values_equal compares floats with ==, so 0.0 equals -0.0; `same` does not.
        assert values_equal(a, b) == same(a, b)


def _has_signed_zero(obj) -> bool:
    if isinstance(obj, float):
        return obj == 0.0
    if isinstance(obj, list):
        return any(_has_signed_zero(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_signed_zero(x) for x in obj.values())
    return False
