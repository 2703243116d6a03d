"""Issue 15, many clients: the reassembler keeps at most ``max_memory_bytes`` of
incomplete transfers in memory and parks the rest in a spill file, read back
straight into the payload when a transfer completes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flwire.exceptions import CommunicationException
from flwire.transport.chunking import (
    DUPLICATE_PART,
    Reassembler,
    parse_part,
    split_payload,
)
from flwire.transport.spill import SpillLog


def parts(payload: bytes, transfer_id: str, record: int = 10_000) -> list[bytes]:
    return [p for p, _, _ in split_payload(payload, transfer_id, record)]


def interleave(groups: list[list[bytes]]) -> list[bytes]:
    out: list[bytes] = []
    for i in range(max(len(g) for g in groups)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def test_interleaved_transfers_stay_under_the_memory_cap_and_complete_bit_exact(
    tmp_path: Path,
) -> None:
    payloads = {f"t{i}": os.urandom(95_000 + i) for i in range(12)}
    r = Reassembler(max_memory_bytes=30_000, spill_dir=str(tmp_path))
    done: dict[str, bytes] = {}
    spilled_peak = 0
    for raw in interleave([parts(p, t) for t, p in payloads.items()]):
        completed, dropped = r.add(parse_part(raw))
        assert dropped == []
        assert r.memory_bytes <= 30_000
        spilled_peak = max(spilled_peak, r.spilled_bytes)
        if completed is not None:
            done[completed.transfer_id] = bytes(completed.payload)
    assert done == payloads
    # Twelve ~95 kB transfers under way at once, 30 kB of them in memory: the rest
    # was on disk, and nothing is left anywhere once all completed.
    assert spilled_peak > 900_000
    assert r.memory_bytes == r.spilled_bytes == r.pending_bytes == 0
    assert r.memory_peak <= 30_000


def test_spill_segments_are_freed_as_transfers_complete(tmp_path: Path) -> None:
    r = Reassembler(max_memory_bytes=0, spill_dir=str(tmp_path))
    written = 0
    for i in range(5):
        records = parts(os.urandom(50_000), f"t{i}")
        assert len(records) > 2
        for raw in records:
            completed, _ = r.add(parse_part(raw))
        assert completed is not None
        assert r.spilled_bytes == r.memory_bytes == 0
        # Every part went through the disk but the one that completed the transfer,
        # which was joined at once.
        written += sum(len(parse_part(raw).data) for raw in records[:-1])
        assert r.spilled_total == written
    # The files are anonymous: nothing stays in the directory, during or after.
    assert list(tmp_path.iterdir()) == []


def test_a_duplicate_of_a_spilled_part_is_recognised_and_a_forged_first_copy_is_outlived(
    tmp_path: Path,
) -> None:
    payload = os.urandom(40_000)
    good = parts(payload, "t")
    r = Reassembler(max_memory_bytes=0, spill_dir=str(tmp_path))
    assert r.add(parse_part(good[0]))[0] is None
    # The same part again: read back from disk, compared, dropped at once.
    completed, dropped = r.add(parse_part(good[0]))
    assert completed is None and [d.reason for d in dropped] == [DUPLICATE_PART]
    # A forged copy of part 1 (same fields, other bytes) arrives before the real one.
    forged = bytearray(good[1])
    forged[-1] ^= 0xFF
    assert r.add(parse_part(bytes(forged)))[0] is None
    for raw in good[1:]:
        completed, _ = r.add(parse_part(raw))
    assert completed is not None and bytes(completed.payload) == payload
    assert r.spilled_bytes == 0


def test_evicted_and_expired_transfers_give_their_disk_back(tmp_path: Path) -> None:
    now = [0.0]
    r = Reassembler(
        max_memory_bytes=0,
        max_pending_bytes=150_000,
        spill_dir=str(tmp_path),
        part_timeout=10,
        clock=lambda: now[0],
    )
    first = parts(os.urandom(100_000), "a")
    second = parts(os.urandom(100_000), "b")
    for raw in first[:-1]:
        r.add(parse_part(raw))
    assert r.spilled_bytes > 80_000
    # b's parts push the total past max_pending_bytes: a, the oldest, is evicted.
    evicted = []
    for raw in second[:-1]:
        evicted += [d.transfer_id for d in r.add(parse_part(raw))[1]]
    assert evicted == ["a"]
    assert r.pending_transfers == 1 and r.memory_bytes == 0
    assert r.spilled_bytes == sum(len(parse_part(raw).data) for raw in second[:-1])
    now[0] = 11
    assert [d.transfer_id for d in r.expire()] == ["b"]
    assert r.spilled_bytes == r.memory_bytes == r.pending_bytes == 0


def test_a_spill_dir_that_refuses_writes_keeps_parts_in_memory_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payload = os.urandom(30_000)
    gone = tmp_path / "gone"
    gone.mkdir()
    r = Reassembler(max_memory_bytes=0, spill_dir=str(gone))
    gone.rmdir()  # the disk goes away after start-up
    for raw in parts(payload, "t"):
        completed, dropped = r.add(parse_part(raw))
        assert dropped == []
    assert completed is not None and bytes(completed.payload) == payload
    # Every part but the completing one was refused by the disk.
    assert r.spill_failures == len(parts(payload, "t")) - 1 >= 2
    warnings = [rec.getMessage() for rec in caplog.records if "could not spill" in rec.getMessage()]
    assert len(warnings) == 1 and "spill_dir" in warnings[0] and str(gone) in warnings[0]


def test_a_spill_dir_that_is_not_a_directory_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        Reassembler(spill_dir=str(tmp_path / "missing"))


def test_spill_log_reads_back_what_it_wrote_and_refuses_released_ranges(
    tmp_path: Path,
) -> None:
    log = SpillLog(str(tmp_path), segment_bytes=100)
    blobs = [os.urandom(70) for _ in range(5)]
    handles = [log.write(b) for b in blobs]
    assert log.segments == 3  # a new segment once one passes 100 bytes
    assert [bytes(log.read(h)) for h in handles] == blobs
    for h in handles[:2]:
        log.release(h)
    assert log.segments == 2 and log.live_bytes == 3 * 70
    with pytest.raises(CommunicationException, match="released"):
        log.read(handles[0])
    log.close()


@pytest.mark.parametrize("bad", [-1, "16MB", 1.5, True])
def test_bad_max_memory_bytes_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_memory_bytes must be None or a number of bytes"):
        Reassembler(max_memory_bytes=bad)  # type: ignore[arg-type]


def test_rss_stays_near_the_memory_cap_while_many_transfers_are_under_way(
    tmp_path: Path,
) -> None:
    """64 transfers of 4 MB, their 1 MB parts interleaved as 64 clients' would be in
    one partition: 256 MB under way at once. With an 8 MB memory cap, the peak RSS
    growth stays within the cap, one payload and its record slack; without a cap it
    holds every transfer (the control, which shows the measure can see it)."""
    script = textwrap.dedent(
        """
        import json, os, sys
        from flwire.transport.chunking import Reassembler, parse_part, split_payload

        def hwm_mb():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024

        cap = None if sys.argv[1] == "none" else int(sys.argv[1])
        r = Reassembler(max_memory_bytes=cap, spill_dir=sys.argv[2])
        block = os.urandom(4 << 20)
        # Each part is a new record as it is made (the senders share one payload).
        senders = [split_payload(block, f"t{i}", 1 << 20) for i in range(64)]
        base = hwm_mb()
        done = 0
        while senders:
            for sender in list(senders):
                raw = next(sender, None)
                if raw is None:
                    senders.remove(sender)
                    continue
                completed, _ = r.add(parse_part(raw[0]))
                del raw
                if completed is not None:
                    assert completed.payload == block
                    done += 1
                    del completed
        print(json.dumps({"grown_mb": hwm_mb() - base, "done": done,
                          "memory_peak": r.memory_peak}))
        """
    )

    def run(cap: str) -> dict[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", script, cap, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return json.loads(out.stdout)

    capped = run(str(8 << 20))
    uncapped = run("none")
    assert capped["done"] == uncapped["done"] == 64
    assert capped["memory_peak"] <= 8 << 20
    assert capped["grown_mb"] < 40, capped
    assert uncapped["grown_mb"] > 200, uncapped


def test_a_completing_part_that_fails_the_checks_is_spilled_to_stay_under_the_cap(
    tmp_path: Path,
) -> None:
    payload = os.urandom(15_000)
    good = parts(payload, "t")
    assert len(good) == 2
    r = Reassembler(max_memory_bytes=0, spill_dir=str(tmp_path))
    r.add(parse_part(good[0]))
    forged = bytearray(good[1])
    forged[-1] ^= 0xFF
    # The forged copy completes the set, is joined at once, fails the CRC-32C, and
    # goes to disk: memory is back under the cap when add returns.
    assert r.add(parse_part(bytes(forged))) == (None, [])
    assert r.memory_bytes == 0
    assert r.spilled_bytes == len(parse_part(good[0]).data) + len(parse_part(good[1]).data)
    completed, _ = r.add(parse_part(good[1]))
    assert completed is not None and bytes(completed.payload) == payload
    assert r.memory_bytes == r.spilled_bytes == 0
