"""Issue 13, "Transfer reassembly: memory counts bytes actually held". Each attack
runs in a subprocess that reports its peak RSS above where it started, beside a
legitimate transfer interleaved with the attack, which must still complete."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from flwire._protowire import encode_varint
from flwire.exceptions import SerializationException
from flwire.transport.chunking import PART_COST, TRANSFER_COST, Reassembler, parse_part
from flwire.v1 import transfer_pb2

#: Peak RSS growth allowed for any attack below (the legitimate 3 MB transfer, its
#: reassembly and the attack's own records included).
RSS_CAP_MB = 40

PRELUDE = textwrap.dedent(
    """
    import json, os, resource, time
    from flwire.transport.chunking import Reassembler, parse_part, split_payload
    from flwire.v1 import transfer_pb2

    def rss_mb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

    def part(**fields):
        return transfer_pb2.TransferPart(**fields).SerializeToString()

    legit = os.urandom(3 << 20)
    legit_parts = [p for p, _, _ in split_payload(legit, "legit", 1_000_000)]
    r = Reassembler()
    completed = []

    def feed(raw, token=None):
        done, dropped = r.add(parse_part(raw), token)
        if done is not None:
            completed.append((done.transfer_id, bytes(done.payload) == legit))
        return dropped

    base = rss_mb()
    started = time.perf_counter()
    """
)
REPORT = textwrap.dedent(
    """
    for raw in legit_parts[1:]:
        feed(raw)
    print(json.dumps({
        "rss_mb": rss_mb() - base, "seconds": time.perf_counter() - started,
        "completed": completed, "pending_bytes": r.pending_bytes,
        "pending": r.pending_transfers,
    }))
    """
)

ATTACKS = {
    # An 18-byte part declaring just under 2 GiB, twice, then the real transfer.
    "declared_2gib": """
        feed(legit_parts[0])
        for i in range(2):
            feed(part(transfer_id=f"big{i}", part_index=0, part_count=2,
                      total_size=2**31 - 1, data=b"x"))
    """,
    # 2,000 copies of a 1 MB part, each a record of its own that is also its token
    # (what a transport hands over and commits): each is handed back at once, so
    # none is held (before: every copy's token was kept, 1.9 GB).
    "duplicates": """
        feed(legit_parts[0])
        dup = part(transfer_id="dup", part_index=0, part_count=2, total_size=2_000_000,
                   data=bytes(1_000_000))
        for _ in range(2000):
            record = bytearray(dup)
            feed(record, token=record)
    """,
    # 3,000 first parts of 1 MB records that declare a 1-byte payload (the rest is
    # unknown-field padding): only the byte is kept, not the record.
    "padded_first_parts": """
        feed(legit_parts[0])
        from flwire._protowire import len_field
        padding = len_field(15, 1_000_000) + bytes(1_000_000)  # an unknown field
        for i in range(3000):
            raw = part(transfer_id=f"p{i}", part_index=0, part_count=2, total_size=1,
                       data=b"x")
            feed(raw + padding)
    """,
    # 50,000 transfer ids: their number is capped; new ones beyond it are refused.
    "many_ids": """
        for i in range(50_000):
            if i == 500:
                feed(legit_parts[0])
            feed(part(transfer_id=f"{i:0>100}", part_index=0, part_count=2,
                      total_size=2, data=b"x"))
    """,
}


def _run(attack: str) -> dict[str, object]:
    code = PRELUDE + textwrap.dedent(ATTACKS[attack]) + REPORT
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_reassembly_memory_is_what_arrived(attack):
    result = _run(attack)
    print(f"\n{attack}: {result}")
    assert result["completed"] == [["legit", True]], result  # never evicted or broken
    assert isinstance(result["rss_mb"], float) and result["rss_mb"] < RSS_CAP_MB, result
    assert isinstance(result["seconds"], float) and result["seconds"] < 30, result


def _head(tid: str, size: int = 2_000_000, data: bytes = b"x") -> bytes:
    return transfer_pb2.TransferPart(
        transfer_id=tid, part_index=0, part_count=3, total_size=size, data=data
    ).SerializeToString()


def test_duplicates_do_not_extend_the_timeout():
    """Before: every duplicate reset the transfer's timeout, so one resent part kept a
    transfer (and its buffer) forever. Only a new part restarts the clock."""
    now = [0.0]
    r = Reassembler(part_timeout=60, clock=lambda: now[0])
    r.add(parse_part(_head("t")))
    for second in range(1, 100):
        now[0] = float(second)
        _, dropped = r.add(parse_part(_head("t")))
        assert [d.reason for d in dropped] == ["a part already received"]
        expired = r.expire()
        if second >= 60:
            assert [d.transfer_id for d in expired] == ["t"]
            break
        assert expired == []
    assert r.pending_transfers == 0 and r.pending_bytes == 0


def test_the_number_of_pending_transfers_is_capped():
    """Transfers under way are kept; new ones beyond the cap are refused (their part
    handed back with its token), until a slot frees."""
    r = Reassembler(max_pending_transfers=10)
    refused = []
    for i in range(25):
        _, dropped = r.add(parse_part(_head(f"t{i}")), token=i)
        refused += [(d.transfer_id, d.tokens) for d in dropped]
    assert r.pending_transfers == 10 and r.refused == 15
    assert refused == [(f"t{i}", [i]) for i in range(10, 25)]
    assert r.pending_bytes == 10 * (1 + PART_COST + TRANSFER_COST)
    second = transfer_pb2.TransferPart(
        transfer_id="t0", part_index=1, part_count=3, total_size=2_000_000, data=b"y"
    ).SerializeToString()
    r.add(parse_part(second))
    assert r.pending_transfers == 10  # t0 still under way, not pushed out
    assert r.add(parse_part(_head("t99")))[1][0].reason.startswith("refused")


@pytest.mark.parametrize(
    ("fields", "message"),  # fields: dict[str, object]
    [
        ({"part_index": 2**32, "part_count": 2**32 + 1}, "does not fit its uint32"),
        ({"part_count": 2**32 + 1}, "does not fit its uint32"),
        ({"transfer_id": "x" * 129}, "longer than 128"),
    ],
)
def test_parts_are_read_as_the_schema_types_say(fields, message):
    """A part_count of 2**32 + 1 was 4294967297 to flwire and 1 to protobuf."""
    tid = str(fields.get("transfer_id", "t"))
    raw = transfer_pb2.TransferPart(
        transfer_id=tid, part_index=0, part_count=2, total_size=10, data=b"x"
    ).SerializeToString()
    for name, value in fields.items():
        if name != "transfer_id":  # the generated class refuses these: write the varint
            number = transfer_pb2.TransferPart.DESCRIPTOR.fields_by_name[name].number
            raw += bytes([number << 3]) + encode_varint(int(value))
    with pytest.raises(SerializationException, match=message):
        parse_part(raw)
