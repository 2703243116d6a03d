"""The reassembler with a memory cap, against any payloads, part sizes, arrival
orders (transfers interleaved, parts out of order, duplicates) and caps:

1. every transfer completes, bit-exact, exactly once;
2. the data held in memory never passes ``max_memory_bytes``;
3. memory and disk are both empty once every transfer is in;
4. a cap of None (nothing spilled) gives the same results.
"""

from __future__ import annotations

import random
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flwire.transport.chunking import Reassembler, parse_part, split_payload


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[dict[str, bytes], list[bytes], int]:
    # 600 bytes leave about 90 for data: up to about 90 parts per transfer.
    record = draw(st.integers(min_value=600, max_value=1_500))
    payloads = {
        f"t{i}": random.Random(draw(st.integers())).randbytes(
            draw(st.integers(min_value=1, max_value=8_000))
        )
        for i in range(draw(st.integers(min_value=1, max_value=6)))
    }
    records = [p for t, b in payloads.items() for p, _, _ in split_payload(b, t, record)]
    records += draw(st.lists(st.sampled_from(records), max_size=4))  # duplicates
    order = draw(st.permutations(records))
    cap = draw(st.integers(min_value=0, max_value=sum(map(len, payloads.values()))))
    return payloads, list(order), cap


def reassemble(records: list[bytes], cap: int | None, spill_dir: str) -> dict[str, bytes]:
    r = Reassembler(max_memory_bytes=cap, spill_dir=spill_dir)
    done: dict[str, bytes] = {}
    for raw in records:
        completed, _dropped = r.add(parse_part(raw))
        if cap is not None:
            assert r.memory_bytes <= cap
        if completed is not None:
            assert completed.transfer_id not in done
            done[completed.transfer_id] = bytes(completed.payload)
    assert r.memory_bytes == r.spilled_bytes == r.pending_bytes == 0
    r.close()
    return done


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals())
def test_any_arrival_order_and_cap_reassembles_every_transfer_bit_exact(
    case: tuple[dict[str, bytes], list[bytes], int],
) -> None:
    payloads, records, cap = case
    with tempfile.TemporaryDirectory() as spill_dir:
        assert reassemble(records, cap, spill_dir) == payloads
        assert reassemble(records, None, spill_dir) == payloads
