"""The byte-shuffle filter (``FILTER_BYTE_SHUFFLE``), on any slice of its output.

Byte j of element i goes to j*n+i, which groups the exponent bytes of floats so
they compress well. Both directions work on a slice ``[a, b)`` of the shuffled
stream without shuffling the rest, so that each frame of a tensor is filtered
on its own worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _plane_ranges(a: int, b: int, n: int) -> Iterator[tuple[int, int, int]]:
    """For bytes ``[a, b)`` of a shuffled stream of n-byte planes: (plane, first
    element, end element) of each plane the range touches."""
    for plane in range(a // n, (b - 1) // n + 1):
        base = plane * n
        yield plane, max(a, base) - base, min(b, base + n) - base


def shuffled_slice(raw: np.ndarray, itemsize: int, a: int, b: int) -> np.ndarray:
    """Bytes ``[a, b)`` of the byte-shuffled ``raw`` (uint8), where byte j of
    element i goes to j*n+i; computed without shuffling the rest."""
    if itemsize == 1 or b == a:
        return raw[a:b]
    n = raw.nbytes // itemsize
    out = np.empty(b - a, dtype=np.uint8)
    if itemsize == 2:  # 16-bit words: a plane is the words' low or high bytes
        words = raw.view("<u2")
        for plane, lo, hi in _plane_ranges(a, b, n):
            dst = out[plane * n + lo - a : plane * n + hi - a]
            np.copyto(dst, words[lo:hi] >> (8 * plane), casting="unsafe")
        return out
    columns = raw.reshape(n, itemsize)
    for plane, lo, hi in _plane_ranges(a, b, n):
        out[plane * n + lo - a : plane * n + hi - a] = columns[lo:hi, plane]
    return out


def unshuffle_slice_into(chunk: np.ndarray, out: np.ndarray, itemsize: int, a: int) -> None:
    """Invert :func:`shuffled_slice`: scatter ``chunk``, bytes ``[a, a+len)`` of a
    shuffled stream, into their places in ``out`` (uint8, the whole tensor)."""
    b = a + chunk.nbytes
    if b == a:
        return
    if itemsize == 1:
        out[a:b] = chunk
        return
    n = out.nbytes // itemsize
    columns = out.reshape(n, itemsize)
    for plane, lo, hi in _plane_ranges(a, b, n):
        columns[lo:hi, plane] = chunk[plane * n + lo - a : plane * n + hi - a]
