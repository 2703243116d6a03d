"""The digest a signature covers (wire format section 14.3): BLAKE3 (32 bytes)
of the signed bytes.

BLAKE3 is a tree hash: the ``blake3`` package hashes a large input on every
core (7x SHA-256's speed on two cores, see ``benchmarks/signing.py``), and the
result does not depend on how many threads there are. The signed bytes can be
handed over in pieces (a message's spliced buffers), so nothing is joined to
be hashed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwire._optional import require

#: Length of the digest, in bytes.
DIGEST_BYTES = 32
#: Below this many bytes a piece is hashed on the calling thread only.
PARALLEL_MIN_BYTES = 1 << 20


def envelope_digest(data: Any, *, threads: bool = True) -> bytes:
    """BLAKE3 of ``data``, a bytes-like object or an iterable of them (hashed
    as their concatenation). ``threads=False`` hashes on the calling thread."""
    blake3 = require("blake3", "sign")
    pieces: Iterable[Any] = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    views = [memoryview(piece).cast("B") for piece in pieces]
    if threads and sum(len(v) for v in views) >= PARALLEL_MIN_BYTES:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    else:
        hasher = blake3.blake3()
    for view in views:
        hasher.update(view)
    digest: bytes = hasher.digest(length=DIGEST_BYTES)
    return digest


def stream_hasher() -> Any:
    """A BLAKE3 hasher fed a streamed transfer's records one by one (each at most
    a record's size: hashed on the calling thread)."""
    return require("blake3", "sign").blake3()
