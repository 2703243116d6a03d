"""crc32c_combine: the CRC-32C of a concatenation from its pieces' CRCs (the
streamed transfer's seal checksum is built this way on both sides)."""

from __future__ import annotations

import crc32c as reference
from hypothesis import given
from hypothesis import strategies as st

from flwire._protowire import crc32c, crc32c_combine


@given(st.binary(max_size=4096), st.binary(max_size=4096))
def test_combining_two_crcs_gives_the_crc_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert crc32c_combine(crc32c(a), crc32c(b), len(b)) == reference.crc32c(a + b)


@given(st.lists(st.binary(max_size=700), max_size=12))
def test_a_running_combination_over_many_pieces(pieces: list[bytes]) -> None:
    crc = 0
    for piece in pieces:
        crc = crc32c_combine(crc, crc32c(piece), len(piece))
    assert crc == reference.crc32c(b"".join(pieces))


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 1 << 40))
def test_long_lengths_are_combined_without_reading_anything(c1: int, c2: int, n: int) -> None:
    # Linearity: combining with a piece of n zero bytes equals extending by them,
    # checked at a small n; any n returns a 32-bit value quickly.
    out = crc32c_combine(c1, c2, n)
    assert 0 <= out < 2**32
    if n <= 4096:
        assert crc32c_combine(c1, crc32c(bytes(n)), n) == reference.crc32c(bytes(n), c1)


def test_a_megabyte_piece() -> None:
    a, b = bytes(range(256)) * 3, bytes(range(255, -1, -1)) * 4096
    assert crc32c_combine(crc32c(a), crc32c(b), len(b)) == reference.crc32c(a + b)
