"""Checks of the arguments callers hand to the SDK's entry points, shared by
every package, so that a mistake is refused at the call with one message that
names the parameter, what it got and what it takes: TypeError for a value of
the wrong type, ValueError for one out of range (Python's conventions).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def type_name(value: Any) -> str:
    """The name of ``value``'s type, as messages show it."""
    return type(value).__name__


def _is_int(value: Any) -> bool:
    """An integer, numpy's included (numbers.Integral), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A real number, numpy's included (numbers.Real), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"from {minimum} to {maximum}"
    if minimum is not None:
        return f">= {minimum}"
    return f"<= {maximum}" if maximum is not None else ""


def require_str(value: Any, name: str, hint: str = "") -> str:
    """``value`` when it is a str, else a TypeError naming ``name`` (``hint``,
    when given, says what the str is, e.g. ``"the client's id, e.g. 'client-1'"``)."""
    if not isinstance(value, str):
        what = f"a str ({hint})" if hint else "a str"
        raise TypeError(f"{name} must be {what}, got {type_name(value)} {value!r}")
    return value


def require_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = 0,
    maximum: int | None = None,
    optional: bool = False,
    unit: str = "",
    why: str = "",
) -> int | None:
    """``value`` as an int when it is an integer (numpy's too; not a bool)
    within ``[minimum, maximum]``, or None when ``optional``; else TypeError
    (wrong type) or ValueError (out of range), naming ``name``, the value and
    the valid range. ``unit`` (``"bytes"``) is shown after the range, ``why``
    (the range's reason) after it."""
    if value is None and optional:
        return None
    span = " ".join(part for part in ("an int", _range(minimum, maximum), unit) if part)
    takes = span + (" or None" if optional else "") + (f" ({why})" if why else "")
    if not _is_int(value):
        raise TypeError(f"{name} must be {takes}, got {type_name(value)} {value!r}")
    result = int(value)  # a numpy integer becomes an int
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        raise ValueError(f"{name} must be {takes}, got {value!r}")
    return result


def require_count(value: Any, name: str, *, minimum: int = 0, unit: str = "", why: str = "") -> int:
    """:func:`require_int` for a value that may not be None."""
    result = require_int(value, name, minimum=minimum, unit=unit, why=why)
    assert result is not None
    return result


def require_positive(value: Any, name: str, *, unit: str = "") -> float:
    """``value`` when it is a real number above 0 (``math.inf`` included), else
    TypeError or ValueError naming ``name``, the value and the valid range."""
    takes = "a number > 0" + (f" ({unit})" if unit else "")
    if not _is_real(value):
        raise TypeError(f"{name} must be {takes}, got {type_name(value)} {value!r}")
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be {takes}, got {value!r}")
    return float(value)
