"""A streamed chunk's record CRC-32C (the seal's checksum) is computed without
reading the raw elements a second time: the writer takes the encoder's CRC of
an uncompressed run (``ending_crc``), the reader the decode's checked CRC of
the elements (``crc32c_of_views``); both through ``_protowire.crc32c_around``,
for every raw tensor of a packed chunk.
Both must equal the CRC-32C of the whole record, for any bytes, any split and
any view; the encoder hands out a known CRC exactly for the raw piece."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire._protowire import crc32c
from flwire.tensors import EncodeOptions, dtypes
from flwire.tensors.decode import check_element_dtype, decode_record_into, read_chunk
from flwire.tensors.encode import encode_elements
from flwire.tensors.sources import Source
from flwire.transport.streaming.format import chunk_part, parse_part
from flwire.transport.streaming.reader import crc32c_of_views
from flwire.transport.streaming.writer import ending_crc


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.binary(max_size=40),
    pieces=st.lists(st.tuples(st.binary(max_size=300), st.booleans()), max_size=6),
)
def test_ending_crc_is_the_crc_of_the_value(prefix: bytes, pieces: list) -> None:
    value = prefix + b"".join(p for p, _ in pieces)
    crcs = [crc32c(p) if known else None for p, known in pieces]
    assert ending_crc(value, [p for p, _ in pieces], crcs) == crc32c(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.data())
def test_crc32c_of_a_view_is_the_crc_of_the_value(value: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(value)))
    end = data.draw(st.integers(start, len(value)))
    inner = memoryview(value)[start:end]
    assert crc32c_of_views(value, [(inner, crc32c(inner))]) == crc32c(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.data())
def test_crc32c_of_several_views_is_the_crc_of_the_value(value: bytes, data: st.DataObject) -> None:
    """A packed chunk's raw tensors: disjoint views, in any order, some empty
    of bytes between them."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(value)), max_size=8)))
    bounds = list(zip(cuts[::2], cuts[1::2], strict=False))
    views = [memoryview(value)[a:b] for a, b in bounds if b > a]
    known = [(v, crc32c(v)) for v in data.draw(st.permutations(views))]
    assert crc32c_of_views(value, known) == crc32c(value)


def test_crc32c_of_something_else_reads_the_whole_value() -> None:
    value = bytes(range(200))
    elsewhere = memoryview(bytes(value[50:100]))  # equal bytes, not a view on value
    assert crc32c_of_views(value, [(elsewhere, 0x12345678)]) == crc32c(value)
    # Overlapping views (no record's tensors overlap): read whole, not trusted.
    whole = memoryview(value)
    assert crc32c_of_views(value, [(whole[10:60], 1), (whole[50:90], 2)]) == crc32c(value)


def _source(n: int, compressible: bool) -> Source:
    raw = np.zeros(n * 4, np.uint8) if compressible else np.random.default_rng(1).bytes(n * 4)
    return Source("w", dtypes.FLOAT32, (n,), np.frombuffer(raw, np.uint8))


@pytest.mark.parametrize(
    ("compression", "compressible", "known"),
    [("none", False, True), ("zstd", True, False), ("zstd", False, True), ("lz4", True, False)],
)
def test_encoder_and_decoder_know_the_crc_of_raw_elements_only(
    compression: str, compressible: bool, known: bool
) -> None:
    src = _source(5000, compressible)
    options = EncodeOptions(compression=compression, threads=1)
    crcs: list[int | None] = []
    pieces = encode_elements(src, 100, 4100, options, crcs=crcs)
    assert len(crcs) == len(pieces)
    raw = bytes(src.raw[400:16400])
    expected = [crc32c(raw) if bytes(p) == raw else None for p in pieces]
    assert crcs == expected
    assert (crc32c(raw) in crcs) is known
    value = chunk_part("t", 1, 0, 100, pieces)
    assert ending_crc(value, pieces, crcs) == crc32c(value)
    # The reader: the decode returns the checked CRC of raw elements, which
    # crc32c_of_views turns into the record's.
    chunk = parse_part(value).chunk
    assert chunk is not None
    (rec,) = read_chunk(chunk.elements)
    check_element_dtype(rec, dtypes.FLOAT32)
    out = np.empty(rec.raw_size, np.uint8)
    data_crc = decode_record_into(rec, out)
    assert bytes(out) == raw
    assert (data_crc is not None) is known
    if data_crc is not None:
        assert crc32c_of_views(value, [(rec.data, data_crc)]) == crc32c(value)
    assert decode_record_into(rec, out, verify_checksum=False) is None
