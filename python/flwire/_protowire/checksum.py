"""CRC-32C (Castagnoli), the checksum of tensors and of split payloads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import crc32c as _crc32c


def crc32c(data: Any, value: int = 0) -> int:
    """CRC-32C of a bytes-like object (releases the GIL for large inputs); ``value``,
    the CRC-32C of the bytes before it, continues a running checksum."""
    return int(_crc32c.crc32c(data, value))


# CRC-32C of a concatenation from the CRCs of its pieces (as zlib's
# crc32_combine, for the Castagnoli polynomial): in the reflected bit order the
# CRC uses, a 32-bit value is a polynomial over GF(2) whose x^0 term is the top bit.
_POLY = 0x82F63B78  # x^32 + ... reflected, without its x^32 term
_X0 = 1 << 31  # the polynomial 1


def _multmodp(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC polynomial."""
    m = _X0
    product = 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


#: x^(2^k) modulo the polynomial, k = 0..31.
_X2N = [_X0 >> 1]
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _x8nmodp(n: int) -> int:
    """x^(8n) modulo the polynomial: n zero bytes' effect on a CRC."""
    product = _X0
    k = 3
    while n:
        if n & 1:
            product = _multmodp(_X2N[k & 31], product)
        n >>= 1
        k += 1
    return product


_SHIFTS: dict[int, int] = {}


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32C of ``A + B`` from ``crc1`` = CRC-32C of A, ``crc2`` = CRC-32C
    of B and ``len2`` = the length of B in bytes, without reading A or B (a few
    microseconds, whatever the lengths)."""
    shift = _SHIFTS.get(len2)
    if shift is None:
        shift = _x8nmodp(len2)
        if len(_SHIFTS) < 1024:  # the record sizes of a stream repeat
            _SHIFTS[len2] = shift
    return _multmodp(shift, crc1) ^ crc2


def crc32c_around(data: Any, spans: Sequence[tuple[int, int, int]]) -> int:
    """The CRC-32C of ``data`` whose bytes ``[start, start + length)`` have the
    CRC-32C ``known``, for each ``(start, length, known)`` of ``spans`` (in
    ascending order, not overlapping): only the bytes around them are read."""
    view = memoryview(data).cast("B")
    crc = at = 0
    for start, length, known in spans:
        crc = crc32c_combine(crc32c(view[at:start], crc), known, length)
        at = start + length
    return crc32c(view[at:], crc)
