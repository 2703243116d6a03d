"""The refusal vectors (tests/vectors/refusals, listed under ``refusals`` in the
manifest): each is an invalid TensorMap that breaks one reader check of
docs/wire-format.md, named by its id (``[frames]``, ``[lossy_size]``, ...).
flwire-python must refuse each, for that check, without holding more memory
than a small bound; the checks that come before allocation (section 10,
checks 1-9, the lossy checks of section 9.1 but the indices, and the limits of
section 11) must already refuse it in ``read_tensor_map``, which decodes
nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from flwire import DecodeLimits, decode_tensor_map, read_tensor_map
from flwire.exceptions import ChecksumMismatchError, PayloadTooLargeError, SerializationException

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
SPEC = ROOT / "docs" / "wire-format.md"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
REFUSALS = {r["name"]: r for r in MANIFEST["refusals"]}

#: How flwire-python words each check's refusal: (exception class, pattern of
#: its message). Each refusal must match its own check and no other.
SIGNATURES: dict[str, tuple[type[Exception], str]] = {
    "protobuf": (
        SerializationException,
        r"truncated (varint|fixed|group)|declares \d+ bytes but only|field number 0|varint longer"
        r"|not valid UTF-8",
    ),
    "dtype": (SerializationException, r"unknown dtype"),
    "shape": (SerializationException, r"negative dimension|strides overflow"),
    "raw_size": (SerializationException, r"of \w+ needs \d+ bytes, but raw_size says"),
    "limits": (PayloadTooLargeError, r"above the limit of|raw bytes in all"),
    "codec": (SerializationException, r"unknown codec"),
    "filter": (SerializationException, r"unknown filter"),
    "data_size": (SerializationException, r"stored uncompressed with \d+ bytes of data"),
    "frames": (
        SerializationException,
        r"not an? (zstd|LZ4) frame|does not record its content size|dictionary|frames declare"
        r"|more than its blocks can hold|corrupt zstd block header|frame is truncated"
        r"|is not the last|block size id|LZ4 frame header",
    ),
    "empty_crc32c": (SerializationException, r"is empty but records CRC-32C"),
    "unique_names": (SerializationException, r"two tensors with the same name"),
    "decompress": (
        SerializationException,
        r"corrupt (zstd|LZ4) data|frame decompresses to|did not end where its blocks end",
    ),
    "crc32c": (ChecksumMismatchError, r"CRC-32C of the decoded bytes"),
    "bool": (SerializationException, r"bool tensor holds bytes other than 0 and 1"),
    "lossy_method": (SerializationException, r"unknown lossy method"),
    "lossy_dtype": (SerializationException, r"floating tensors only|is not allowed \(casts"),
    "lossy_params": (SerializationException, r"block_size \d+ \(must be >=|top-k keeps k="),
    "lossy_size": (SerializationException, r"lossy payload of shape .* takes \d+ bytes"),
    "lossy_not_smaller": (
        SerializationException,
        r"is not smaller than the tensor's \d+ raw bytes",
    ),
    "lossy_filter": (SerializationException, r"lossy payload must not be filtered"),
    "topk_indices": (SerializationException, r"top-k ind(ices|ex)"),
    "max_tensors": (PayloadTooLargeError, r"holds more than \d+ tensors"),
    "max_rank": (SerializationException, r"rank (\d+, )?above the limit"),
    "max_unknown_bytes": (SerializationException, r"bytes of unknown fields"),
    "max_expansion": (PayloadTooLargeError, r"max_expansion"),
}
#: Checks made after the data is decompressed (section 10, checks 10-13, and
#: the top-k indices of section 9.1): everything else refuses before.
AFTER_ALLOCATION = {"decompress", "crc32c", "bool", "topk_indices"}
#: Peak memory a refusal may cost beyond the input (the largest declares 1 GiB).
PEAK_BYTES = 4 << 20


def _bin(refusal: dict[str, Any]) -> bytes:
    return (VECTORS / refusal["file"]["path"]).read_bytes()


def _limits(refusal: dict[str, Any]) -> DecodeLimits:
    return DecodeLimits(**refusal.get("limits", {}))


def _checks_of(exc: BaseException) -> set[str]:
    """The checks a refusal names: the ``[id]`` tags its message carries, if
    any, else the checks whose signature it matches."""
    tagged = set(re.findall(r"\[([a-z][a-z0-9_]*)\]", str(exc)))
    if tagged:
        return tagged
    return {
        check
        for check, (kind, pattern) in SIGNATURES.items()
        if isinstance(exc, kind) and re.search(pattern, str(exc))
    }


def test_every_refusal_file_is_listed_with_its_hash() -> None:
    for r in MANIFEST["refusals"]:
        data = _bin(r)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (
            r["file"]["size"],
            r["file"]["sha256"],
        ), r["name"]
    listed = {r["file"]["path"] for r in MANIFEST["refusals"]}
    assert {f"refusals/{p.name}" for p in (VECTORS / "refusals").iterdir()} == listed


def _spec_check_ids() -> set[str]:
    """The check ids the spec defines: ``[id]`` in backticks, as section 10 writes them
    (but for section 14.5's, the checks of streamed transfers: test_stream_vectors.py)."""
    text = SPEC.read_text("utf-8")
    start = text.index("\n### 14.5 ")
    end = text.index("\n## 15. ", start)
    return set(re.findall(r"`\[([a-z0-9_]+)\]`", text[:start] + text[end:]))


def test_every_check_of_the_spec_has_a_refusal_vector() -> None:
    ids = _spec_check_ids()
    assert ids == set(SIGNATURES), "check ids in docs/wire-format.md and this runner differ"
    covered = {r["check"] for r in MANIFEST["refusals"]}
    assert covered == ids, f"checks without a refusal vector: {sorted(ids - covered)}"


def test_the_manifest_sections_are_the_specs() -> None:
    text = SPEC.read_text("utf-8")
    for r in MANIFEST["refusals"]:
        section = r["section"]
        assert re.search(rf"`\[{r['check']}\]`", text), r["check"]
        heading = section.split(".")[0]
        assert re.search(rf"^#+ {re.escape(heading)}\.? ", text, re.M), (r["name"], section)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusal_vector_is_refused_for_its_check(name: str) -> None:
    refusal = REFUSALS[name]
    data = _bin(refusal)
    tracemalloc.start()
    try:
        with pytest.raises(SerializationException) as info:
            decode_tensor_map(data, limits=_limits(refusal), as_numpy=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _checks_of(info.value) == {refusal["check"]}, str(info.value)
    assert peak < PEAK_BYTES + 2 * len(data), f"{name}: peak {peak} bytes while refusing"


@pytest.mark.parametrize(
    "name", sorted(n for n, r in REFUSALS.items() if r["check"] not in AFTER_ALLOCATION)
)
def test_refused_before_anything_is_allocated(name: str) -> None:
    refusal = REFUSALS[name]
    with pytest.raises(SerializationException) as info:
        read_tensor_map(_bin(refusal), limits=_limits(refusal))
    assert _checks_of(info.value) == {refusal["check"]}, str(info.value)


@pytest.mark.parametrize(
    "name", sorted(n for n, r in REFUSALS.items() if r["check"] in AFTER_ALLOCATION)
)
def test_refused_only_when_decoding_passes_the_walk(name: str) -> None:
    """The refusals of checks 10-13 are structurally valid: only decoding finds them."""
    refusal = REFUSALS[name]
    assert read_tensor_map(_bin(refusal), limits=_limits(refusal)).records
