"""The frame-codec seam: one registry, EncodeOptions, and both codecs behind it."""

from __future__ import annotations

import numpy as np
import pytest

import flwire
from flwire import messages
from flwire.exceptions import SerializationException
from flwire.tensors import EncodeOptions, codecs, read_tensor_map
from flwire.tensors.codecs import FRAME_BYTES, FrameCodec
from flwire.v1 import tensor_pb2

RNG = np.random.default_rng(3)
# Large enough for several frames; smooth enough that both codecs compress it.
SMOOTH = np.cumsum(RNG.integers(-2, 3, 700_000), dtype=np.int32).astype(np.float32)
STATE: dict[str, np.ndarray] = {"smooth": SMOOTH, "small": np.arange(10, dtype=np.int64)}


def test_the_registry_holds_zstd_and_lz4_under_their_schema_values():
    assert codecs.names() == ("zstd", "lz4")
    assert codecs.compression_names() == ("zstd", "lz4", "none")
    assert codecs.by_name("zstd").wire == tensor_pb2.CODEC_ZSTD
    assert codecs.by_name("lz4").wire == tensor_pb2.CODEC_LZ4
    assert codecs.by_wire(tensor_pb2.CODEC_LZ4) is codecs.LZ4
    assert codecs.by_wire(tensor_pb2.CODEC_UNSPECIFIED) is None
    # Every codec of the schema has an implementation, and nothing else does.
    schema = {v.number for v in tensor_pb2.Codec.DESCRIPTOR.values if v.number}
    assert {codecs.by_name(n).wire for n in codecs.names()} == schema


def test_a_name_or_value_cannot_be_registered_twice():
    class Fake(FrameCodec):
        name, wire, default_level = "zstd", 99, 0

        def compress(self, data, level):  # pragma: no cover - never called
            raise AssertionError

        def frame_end(self, data, pos, tensor_name):  # pragma: no cover
            raise AssertionError

        def decompress_into(self, frame, out, tensor_name):  # pragma: no cover
            raise AssertionError

    with pytest.raises(ValueError, match="already taken"):
        codecs.register(Fake())
    Fake.name, Fake.wire = "other", tensor_pb2.CODEC_ZSTD
    with pytest.raises(ValueError, match="already taken"):
        codecs.register(Fake())
    assert codecs.names() == ("zstd", "lz4")


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_each_codec_round_trips_in_several_frames(compression, shuffle):
    blob = flwire.encode_tensor_map(STATE, compression=compression, shuffle=shuffle)
    records = {r.name: r for r in read_tensor_map(blob).records}
    big = records["smooth"]
    assert big.codec == codecs.by_name(compression).wire
    assert len(big.frames) == -(-SMOOTH.nbytes // FRAME_BYTES)
    assert len(big.data) < SMOOTH.nbytes
    out = flwire.decode_tensor_map(blob, as_numpy=True)
    for name, want in STATE.items():
        assert np.array_equal(out[name], want)


def test_a_tensor_that_does_not_compress_is_kept_raw_with_either_codec():
    noise = {"noise": RNG.integers(0, 256, 200_000, dtype=np.uint8)}
    for compression in codecs.names():
        (rec,) = read_tensor_map(flwire.encode_tensor_map(noise, compression=compression)).records
        assert rec.codec == tensor_pb2.CODEC_UNSPECIFIED


def test_lz4_decodes_what_zstd_encoded_and_back_through_the_same_reader():
    zstd = flwire.encode_tensor_map(STATE, compression="zstd", shuffle=True)
    lz4 = flwire.encode_tensor_map(STATE, compression="lz4", shuffle=True)
    a = flwire.decode_tensor_map(zstd, as_numpy=True)
    b = flwire.decode_tensor_map(lz4, as_numpy=True)
    assert all(np.array_equal(a[k], b[k]) for k in STATE)


def test_encode_options_are_one_frozen_value_and_keywords_override_them():
    options = EncodeOptions(compression="lz4", shuffle=True)
    with pytest.raises(AttributeError):
        options.shuffle = False  # type: ignore[misc]
    blob = flwire.encode_tensor_map(STATE, options, shuffle=False)
    rec = {r.name: r for r in read_tensor_map(blob).records}["smooth"]
    assert rec.codec == tensor_pb2.CODEC_LZ4 and rec.filter == tensor_pb2.FILTER_UNSPECIFIED
    assert options.codec is codecs.LZ4 and options.codec_level == codecs.LZ4.default_level
    assert EncodeOptions(compression="none").codec is None
    assert EncodeOptions(level=5).codec_level == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"compression": "gzip"}, "unknown compression 'gzip'; use one of zstd, lz4, none"),
        ({"threads": 0}, "threads must be a positive int"),
        ({"level": "fast"}, "level must be an int"),
        ({"lossy": "int8"}, "lossy must be a LossyConfig"),
    ],
)
def test_bad_options_are_refused_with_the_reason(kwargs, match):
    with pytest.raises(SerializationException, match=match):
        EncodeOptions(**kwargs)
    with pytest.raises(SerializationException, match=match):
        flwire.encode_tensor_map(STATE, **kwargs)


def test_options_must_be_encode_options():
    with pytest.raises(SerializationException, match="must be an EncodeOptions"):
        flwire.encode_tensor_map(STATE, {"compression": "none"})  # type: ignore[arg-type]


def test_a_server_picks_a_codec_every_client_decodes():

    both = messages.client_registration("a")  # default: every codec this flwire has
    zstd_only = messages.client_registration("b", supported_codecs=["zstd"])
    nothing = messages.client_registration("c", supported_codecs=[])
    assert messages.supported_codecs(both) == ["zstd", "lz4"]
    assert messages.pick_codec([both], ["lz4", "zstd"]) == "lz4"
    assert messages.pick_codec([both, zstd_only], ["lz4", "zstd"]) == "zstd"
    assert messages.pick_codec([both, nothing]) == "none"
    decoded = messages.decode_message(zstd_only.to_bytes())
    assert messages.supported_codecs(decoded.body.capabilities) == ["zstd"]
    EncodeOptions(compression=messages.pick_codec([both, zstd_only]))
