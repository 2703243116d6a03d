"""Signing and verifying vs encoding and decoding the 100M-parameter model.

    python -m benchmarks.signing [--quick] [--runs 5]

Times, per run, on the same state dict (``transformer100m``, ~400 MB float32):

* encode: build a ClientUpdate (zstd default) and join its bytes; encode + sign:
  the same with ``security.sign_message`` (digest over the unjoined buffers,
  Ed25519, one join);
* decode: parse and decode every tensor; verify + decode: ``verify_message``
  first (digest, Ed25519, ids), then every tensor;
* the digest alone (BLAKE3 on every core, and on one thread) and, for
  comparison, SHA-256 in one pass and over 1 MiB chunks on threads, and
  BLAKE2b.

Prints medians and the overhead of signing + verifying over encode + decode,
with the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.models import big_model, raw_size
from flwire import messages, security

KEY_ID = "client-1"
CHUNK = 1 << 20


def _median(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sha256_chunks(data: bytes, pool: ThreadPoolExecutor, workers: int) -> bytes:
    """SHA-256 over the SHA-256 of each 1 MiB chunk, the chunks split over threads."""
    view = memoryview(data)
    count = -(-len(view) // CHUNK)
    per = -(-count // workers)

    def leaves(first: int) -> bytes:
        last = min(count, first + per)
        return b"".join(
            hashlib.sha256(view[i * CHUNK : (i + 1) * CHUNK]).digest() for i in range(first, last)
        )

    return hashlib.sha256(b"".join(pool.map(leaves, range(0, count, per)))).digest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the ~10M stand-in")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    state = big_model(args.quick)
    key = security.private_key_from_seed(bytes(32))
    trust = security.TrustStore({KEY_ID: key.public_key()})

    def build() -> messages.Message:
        return messages.client_update(KEY_ID, 1, state, num_examples=1)

    blob = build().to_bytes()
    signed = security.sign_message(build(), KEY_ID, key)
    workers = os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers)
    rows: dict[str, float] = {
        "encode": _median(lambda: build().to_bytes(), args.runs),
        "encode + sign": _median(lambda: security.sign_message(build(), KEY_ID, key), args.runs),
        "decode": _median(lambda: messages.decode_message(blob).tensors(), args.runs),
        "verify + decode": _median(
            lambda: security.verify_message(signed, trust).tensors(), args.runs
        ),
        "digest: BLAKE3, every core": _median(lambda: security.envelope_digest(blob), args.runs),
        "BLAKE3, one thread": _median(
            lambda: security.envelope_digest(blob, threads=False), args.runs
        ),
        "SHA-256, one pass": _median(lambda: hashlib.sha256(blob).digest(), args.runs),
        f"SHA-256 of 1 MiB chunks, {workers} threads": _median(
            lambda: _sha256_chunks(blob, pool, workers), args.runs
        ),
        "BLAKE2b, one pass": _median(lambda: hashlib.blake2b(blob).digest(), args.runs),
    }
    pool.shutdown()
    load = os.getloadavg()
    print(
        f"model: {raw_size(state) / 1e6:.0f} MB raw, envelope {len(blob) / 1e6:.0f} MB; "
        f"{workers} cores; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"medians of {args.runs} runs"
    )
    for name, seconds in rows.items():
        print(f"  {name:40s} {seconds * 1000:9.1f} ms")
    base = rows["encode"] + rows["decode"]
    extra = rows["encode + sign"] + rows["verify + decode"] - base
    print(f"  signing + verifying add {100 * extra / base:.1f} % to encode + decode")
    # On a shared machine the difference of two pipelines is noisy; signing and
    # verifying are each one digest (Ed25519 on 93 bytes takes ~0.1 ms), so:
    digest = rows["digest: BLAKE3, every core"]
    print(f"  2 x digest over encode + decode: {100 * 2 * digest / base:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
