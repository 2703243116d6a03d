"""OffsetTracker: the low-water mark a consumer may commit when records finish
out of order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flwire.transport.offsets import OffsetTracker

TP = ("topic", 0)


@st.composite
def offsets_and_finish_order(draw) -> tuple[list[int], list[int]]:
    start = draw(st.integers(0, 10**9))
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=60))
    offsets = []
    current = start
    for gap in gaps:
        offsets.append(current)
        current += gap
    order = draw(st.permutations(offsets))
    return offsets, order


@given(offsets_and_finish_order())
def test_commits_are_monotonic_and_never_pass_an_unfinished_offset(case):
    offsets, order = case
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.seen(TP, offset)
    unfinished = set(offsets)
    last_commit = None
    for offset in order:
        moved = tracker.finish(TP, offset)
        unfinished.discard(offset)
        if moved is None:
            continue
        assert last_commit is None or moved > last_commit
        assert all(moved <= o for o in unfinished)
        # everything seen below the commit is finished
        assert all(o not in unfinished for o in offsets if o < moved)
        last_commit = moved
    assert last_commit == offsets[-1] + 1


@given(offsets_and_finish_order(), st.integers(0, 60))
def test_interleaving_seen_and_finish(case, seen_first):
    """Records finish while later ones are still arriving (as in a consumer)."""
    offsets, _ = case
    tracker = OffsetTracker()
    seen_first = min(seen_first, len(offsets))
    for offset in offsets[:seen_first]:
        tracker.seen(TP, offset)
    commits = []
    finished = []
    for offset in offsets[:seen_first]:
        moved = tracker.finish(TP, offset)
        finished.append(offset)
        assert moved == offset + 1  # in order: every finish moves the mark
        commits.append(moved)
    for offset in offsets[seen_first:]:
        tracker.seen(TP, offset)
        commits.append(tracker.finish(TP, offset))
    assert commits == [o + 1 for o in offsets]


def test_commit_waits_for_the_lowest_unfinished_offset():
    tracker = OffsetTracker()
    for offset in (10, 11, 15, 16):
        tracker.seen(TP, offset)
    assert tracker.finish(TP, 11) is None
    assert tracker.finish(TP, 16) is None
    assert tracker.finish(TP, 10) == 12
    assert tracker.finish(TP, 15) == 17


def test_partitions_are_independent():
    tracker = OffsetTracker()
    a, b = ("t", 0), ("t", 1)
    for offset in range(3):
        tracker.seen(a, offset)
        tracker.seen(b, offset)
    assert tracker.finish(b, 0) == 1
    assert tracker.finish(a, 1) is None
    assert tracker.finish(b, 1) == 2
    assert tracker.finish(a, 0) == 2


@given(
    st.dictionaries(
        st.tuples(st.sampled_from(["x", "y"]), st.integers(0, 3)),
        st.integers(1, 20),
        min_size=1,
        max_size=5,
    ),
    st.randoms(use_true_random=False),
)
def test_many_partitions_end_at_last_plus_one(counts, rnd):
    tracker = OffsetTracker()
    events = []
    for tp, count in counts.items():
        for offset in range(count):
            tracker.seen(tp, offset)
            events.append((tp, offset))
    rnd.shuffle(events)
    final: dict = {}
    for tp, offset in events:
        moved = tracker.finish(tp, offset)
        if moved is not None:
            assert moved > final.get(tp, 0)
            final[tp] = moved
    assert final == counts


def test_the_same_offset_seen_twice_and_finished_twice_keeps_the_commit_advancing():
    """The old bug: the second copy's finish lost its mark, and the commit went
    backwards (or stopped)."""
    tracker = OffsetTracker()
    tracker.seen(TP, 5)
    tracker.seen(TP, 5)  # redelivered while the first copy is in flight
    tracker.seen(TP, 6)
    assert tracker.pending(TP) == 2  # duplicates do not grow the tracker
    assert tracker.finish(TP, 5) == 6
    assert tracker.finish(TP, 5) is None  # the second copy: nothing moves back
    assert tracker.finish(TP, 6) == 7
    tracker.seen(TP, 7)
    assert tracker.finish(TP, 7) == 8
    assert tracker.committed(TP) == 8
    assert tracker.pending(TP) == 0


def test_a_second_copy_of_a_finished_offset_does_not_hold_the_commit_back():
    tracker = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.seen(TP, offset)
    assert tracker.finish(TP, 1) is None
    assert tracker.finish(TP, 2) is None
    # A rejoin rewinds to the group's committed offset (0) and delivers again.
    for offset in (0, 1, 2, 3):
        tracker.seen(TP, offset)
    assert tracker.pending(TP) == 4
    assert tracker.finish(TP, 0) == 3  # 1 and 2 were handled once already
    assert tracker.finish(TP, 0) is None
    assert tracker.finish(TP, 1) is None
    assert tracker.finish(TP, 3) == 4
    assert tracker.pending(TP) == 0


def test_a_rewind_below_the_commit_is_ignored_and_never_moves_it_back():
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.seen(TP, offset)
    for offset in range(5):
        tracker.finish(TP, offset)
    assert tracker.committed(TP) == 5
    # The broker's committed offset lagged (our commit was in flight): offsets
    # 2.. are delivered again, then new ones.
    for offset in range(2, 8):
        tracker.seen(TP, offset)
    assert tracker.pending(TP) == 3  # 5, 6, 7
    assert tracker.finish(TP, 3) is None
    assert tracker.finish(TP, 6) is None
    assert tracker.finish(TP, 5) == 7
    assert tracker.finish(TP, 2) is None
    assert tracker.finish(TP, 7) == 8


def test_forget_drops_the_partition_and_late_finishes_do_not_move_it():
    tracker = OffsetTracker()
    for offset in range(4):
        tracker.seen(TP, offset)
    old = tracker.generation(TP)
    assert tracker.finish(TP, 0, generation=old) == 1
    tracker.forget(TP)  # revoked
    assert tracker.pending(TP) == 0
    assert tracker.committed(TP) == 1
    assert tracker.generation(TP) != old
    # Late finishes of records seen before the revoke.
    assert tracker.finish(TP, 1, generation=old) is None
    assert tracker.finish(TP, 2) is None  # not seen since: nothing to finish
    # Re-assigned: delivery restarts at the committed offset (and below it).
    new = tracker.generation(TP)
    for offset in range(0, 5):
        tracker.seen(TP, offset)
    assert tracker.pending(TP) == 4  # 1..4; 0 is below the commit
    assert tracker.finish(TP, 3, generation=old) is None  # the old copy of 3
    assert tracker.finish(TP, 2, generation=old) is None
    assert tracker.finish(TP, 1, generation=new) == 2
    assert tracker.finish(TP, 2, generation=new) == 3
    assert tracker.finish(TP, 3) == 4
    assert tracker.finish(TP, 4) == 5


def test_forget_never_lets_a_commit_go_backwards():
    tracker = OffsetTracker()
    for offset in range(10):
        tracker.seen(TP, offset)
        tracker.finish(TP, offset)
    tracker.forget(TP)
    # Re-assigned from an older committed offset (ours had not landed).
    for offset in range(6, 12):
        tracker.seen(TP, offset)
    assert tracker.finish(TP, 6) is None
    assert tracker.finish(TP, 9) is None
    assert tracker.finish(TP, 10) == 11
    assert tracker.finish(TP, 11) == 12


def test_gaps_are_not_waited_for():
    tracker = OffsetTracker()
    for offset in (10, 13, 20):  # 11, 12, 14..19: compacted, or markers
        tracker.seen(TP, offset)
    assert tracker.finish(TP, 13) is None
    assert tracker.finish(TP, 10) == 14
    assert tracker.finish(TP, 20) == 21
    tracker.seen(TP, 25)
    assert tracker.finish(TP, 25) == 26
    tracker.seen(TP, 30)
    tracker.seen(TP, 31)
    assert tracker.finish(TP, 31) is None
    assert tracker.finish(TP, 27) is None  # never seen: changes nothing
    assert tracker.finish(TP, 30) == 32


def test_finishes_that_match_nothing_are_ignored():
    tracker = OffsetTracker()
    assert tracker.finish(("unknown", 3), 7) is None
    assert tracker.committed(("unknown", 3)) is None
    assert tracker.pending(("unknown", 3)) == 0
    tracker.forget(("unknown", 3))  # nothing to drop; a new generation all the same
    assert tracker.generation(("unknown", 3)) == 1
    assert tracker.committed(("unknown", 3)) is None
    tracker.seen(TP, 4)
    assert tracker.finish(TP, 9) is None
    assert tracker.finish(TP, 3) is None
    assert tracker.committed(TP) is None
    assert tracker.finish(TP, 4) == 5
    assert tracker.finish(TP, 4) is None


def test_memory_follows_the_commit_point():
    tracker = OffsetTracker()
    for _ in range(3):  # every offset delivered three times
        for offset in range(1000):
            tracker.seen(TP, offset)
    assert tracker.pending(TP) == 1000
    for offset in range(1, 1000):
        assert tracker.finish(TP, offset) is None
    assert tracker.pending(TP) == 1000  # 0 still holds the commit point
    assert tracker.finish(TP, 0) == 1000
    assert tracker.pending(TP) == 0
