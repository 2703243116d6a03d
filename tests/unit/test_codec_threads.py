"""The encoder's plumbing: results consumed in order from worker threads, and
the output bytes filled in place."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from flwire.exceptions import SerializationException
from flwire.tensors.output import FilledBytes
from flwire.tensors.parallel import consume_in_order

BIG = [1 << 20] * 40  # sizes that make consume_in_order use threads


def _jittery(i: int) -> tuple[int, str]:
    time.sleep(random.random() / 500)  # results finish out of order
    return i, threading.current_thread().name


def test_results_are_consumed_in_order_one_at_a_time_on_worker_threads():
    got: list[int] = []
    threads: set[str] = set()
    busy = threading.Lock()

    def consume(result: tuple[int, str]) -> None:
        assert busy.acquire(blocking=False), "two consumers at once"
        try:
            got.append(result[0])
            threads.add(threading.current_thread().name)
        finally:
            busy.release()

    consume_in_order(_jittery, consume, BIG, threads=3)
    assert got == list(range(len(BIG)))
    assert threading.current_thread().name not in threads  # workers consumed them


def test_small_work_runs_on_the_calling_thread():
    names: list[str] = []
    consume_in_order(_jittery, lambda r: names.append(r[1]), [10, 10], threads=4)
    assert names == [threading.current_thread().name] * 2


def test_no_more_than_four_results_per_thread_wait_to_be_consumed():
    started: list[int] = []
    consumed: list[int] = []

    def fn(i: int) -> int:
        started.append(i)
        assert i - len(consumed) <= 4 * 2, (i, len(consumed))
        return i

    def consume(i: int) -> None:
        time.sleep(0.001)
        consumed.append(i)

    consume_in_order(fn, consume, BIG, threads=2)
    assert consumed == list(range(len(BIG)))


@pytest.mark.parametrize("where", ["fn", "consume"])
def test_the_first_error_is_raised_and_nothing_is_consumed_after_it(where):
    consumed: list[int] = []

    def fn(i: int) -> int:
        if where == "fn" and i == 7:
            raise ValueError("bad tensor 7")
        return i

    def consume(i: int) -> None:
        if where == "consume" and i == 7:
            raise ValueError("bad tensor 7")
        consumed.append(i)

    with pytest.raises(ValueError, match="bad tensor 7"):
        consume_in_order(fn, consume, BIG, threads=2)
    assert consumed == list(range(7))


def test_filled_bytes_returns_exactly_what_was_written():
    rng = np.random.default_rng(1)
    pieces = [
        b"header",
        rng.integers(0, 255, 100_000, dtype=np.uint8),
        bytes(range(200)) * 300,
        b"",
        memoryview(b"tail"),
    ]
    out = FilledBytes(sum(len(p) if not isinstance(p, np.ndarray) else p.nbytes for p in pieces))
    for p in pieces:
        out.write(p)
    value = out.getvalue()
    assert type(value) is bytes
    assert value == b"".join(bytes(p) for p in pieces)


def test_filled_bytes_refuses_to_outgrow_its_capacity():
    out = FilledBytes(10)
    out.write(b"12345")
    with pytest.raises(SerializationException, match="estimated size"):
        out.write(b"123456")
    assert out.getvalue() == b"12345"
