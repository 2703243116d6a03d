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
