"""OffsetTracker against a model of a Kafka consumer's life.

Random interleavings over one to three partitions of: new records (in offset
order, with occasional gaps), rewinds (a rejoin redelivers from an earlier
offset), duplicate deliveries of recent records, finishes of any outstanding
copy (in any order, including copies from before a revoke), finishes of
offsets that were never seen, and revokes followed by a re-assignment that
restarts at the last committed offset.

The model keeps the truth independently of the tracker: the offsets seen and
finished at least once, overall and per generation (between revokes). After
every step, for the partition it touched (the others must be unchanged):

1. the committed offset never goes backwards, and ``finish`` returns a value
   only when it moved strictly forward;
2. safety: every offset seen below the committed one was finished at least
   once (in the current generation, for those seen in it);
3. liveness: once every copy received in the current generation is finished,
   the committed offset is the largest offset seen + 1;
4. memory: the tracker holds at most the distinct offsets seen in the current
   generation in [committed, largest seen];

and after each finish the committed offset is exactly the model's (the offset
after the longest finished run of seen offsets, gaps skipped).

Each check was seen to fail on a broken tracker: the old one (a second copy
of an offset moved the commit back), one that lets a redelivered copy of a
finished offset hold the commit back, one that commits past an unfinished
offset, one that stops after the first finished offset, one that never drops
finished offsets, and ones that ignore revokes or the generation of a finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from flwire.transport.offsets import OffsetTracker

TopicPartition = tuple[str, int]

RECEIVE, REWIND, DUPLICATE, FINISH, FINISH_UNSEEN, REVOKE = range(6)
# Weights: mostly records arriving and finishing.
ALL_EVENTS = [RECEIVE] * 6 + [FINISH] * 6 + [REWIND, DUPLICATE, DUPLICATE, FINISH_UNSEEN, REVOKE]
NO_REVOKE = [e for e in ALL_EVENTS if e != REVOKE]

EXAMPLES = max(settings().max_examples, 250)  # more under the "thorough" profile


@dataclass
class Partition:
    """The truth about one partition, kept without the tracker."""

    base: int
    log: list[int] = field(default_factory=list)  # offsets that exist, grown lazily
    pos: int = 0  # index in log of the next record the broker delivers
    gen: int = 0
    gen_start: int | None = None  # the commit when this generation began
    gen_start_pos: int = 0
    recent: list[int] = field(default_factory=list)  # last delivered, this generation
    seen_gen: set[int] = field(default_factory=set)
    finished_gen: set[int] = field(default_factory=set)  # by copies of this generation
    seen_ever: set[int] = field(default_factory=set)
    finished_ever: set[int] = field(default_factory=set)
    copies: list[tuple[int, int]] = field(default_factory=list)  # outstanding (gen, offset)
    committed: int | None = None  # the last value the tracker reported
    pending: int = 0  # what the tracker held after the last step

    def next_record(self, choice: int) -> int:
        if self.pos == len(self.log):
            gap = 1 + choice % 4 if choice % 5 == 0 else 1
            self.log.append(self.log[-1] + gap if self.log else self.base)
        offset = self.log[self.pos]
        self.pos += 1
        return offset

    def expected_commit(self) -> int | None:
        """The offset after the longest run of finished offsets seen in this
        generation (from its start), or the generation's starting commit."""
        run_end = None
        for offset in sorted(o for o in self.seen_gen if self.in_generation(o)):
            if offset not in self.finished_gen:
                break
            run_end = offset + 1
        return _max(self.gen_start, run_end)

    def in_generation(self, offset: int) -> bool:
        return self.gen_start is None or offset >= self.gen_start


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def run(tracker: OffsetTracker, bases: list[int], events: list[tuple[int, int, int]]) -> None:
    parts = {("t", i): Partition(base) for i, base in enumerate(bases)}
    tps = list(parts)
    for kind, which, choice in events:
        tp = tps[which % len(tps)]
        p = parts[tp]
        moved: int | None = None
        finished_current = False
        before = tracker.committed(tp)

        if kind in (RECEIVE, DUPLICATE):
            if kind == DUPLICATE and p.recent:
                offset = p.recent[-1 - choice % len(p.recent)]
            else:
                offset = p.next_record(choice)
            tracker.seen(tp, offset)
            p.copies.append((p.gen, offset))
            p.seen_gen.add(offset)
            p.seen_ever.add(offset)
            p.recent = [*p.recent[-7:], offset]
        elif kind == REWIND:
            # A rejoin restarts at the group's committed offset, usually ours,
            # sometimes an older one (our last commit had not landed).
            earlier = range(p.gen_start_pos, p.pos)
            at_commit = [i for i in earlier if p.committed is None or p.log[i] >= p.committed]
            choices = at_commit if at_commit and choice % 4 else list(earlier)
            if choices:
                p.pos = choices[choice % len(choices)]
        elif kind == FINISH and p.copies:
            gen, offset = p.copies.pop(choice % len(p.copies))
            current = gen == p.gen
            pass_generation = not current or choice % 2 == 0
            moved = tracker.finish(tp, offset, generation=gen if pass_generation else None)
            p.finished_ever.add(offset)
            if current:
                p.finished_gen.add(offset)
                finished_current = True
            else:
                assert moved is None, "a finish from before a revoke moved the commit"
        elif kind == FINISH_UNSEEN:
            # An offset in a gap, or past everything delivered.
            top = max(p.log, default=p.base)
            offset = top + 1 + choice % 3 if choice % 2 else p.base + choice % (top - p.base + 2)
            if offset not in p.seen_ever:
                moved = tracker.finish(tp, offset)
                assert moved is None, "a finish of a record never seen moved the commit"
        elif kind == REVOKE:
            tracker.forget(tp)
            assert tracker.pending(tp) == 0
            p.gen += 1
            p.gen_start = p.committed
            # Re-assigned: delivery restarts at the committed offset.
            p.pos = next(
                (i for i, o in enumerate(p.log) if p.committed is None or o >= p.committed),
                len(p.log),
            )
            p.gen_start_pos = p.pos
            p.recent = []
            p.seen_gen = set()
            p.finished_gen = set()

        # (1) Never backwards; a returned value moved strictly forward.
        after = tracker.committed(tp)
        if moved is None:
            assert after == before
        else:
            assert before is None or moved > before
            assert after == moved
        p.committed = after
        if finished_current:
            assert after == p.expected_commit()

        check(tracker, tp, p)
        p.pending = tracker.pending(tp)
        # The other partitions are untouched.
        for other_tp, q in parts.items():
            assert tracker.committed(other_tp) == q.committed
            assert tracker.pending(other_tp) == q.pending


def check(tracker: OffsetTracker, tp: TopicPartition, p: Partition) -> None:
    committed = tracker.committed(tp)
    assert committed == p.committed
    if committed is not None:
        # (2) Safety: nothing unfinished below the commit.
        unfinished = [o for o in p.seen_ever if o < committed and o not in p.finished_ever]
        assert not unfinished, f"committed {committed} past unfinished {unfinished}"
        unfinished = [
            o
            for o in p.seen_gen
            if o < committed and p.in_generation(o) and o not in p.finished_gen
        ]
        assert not unfinished, f"committed {committed} past {unfinished}, unfinished this gen"
    # (3) Liveness.
    if not any(gen == p.gen for gen, _ in p.copies):
        top = max(p.seen_gen, default=None)
        assert committed == _max(p.gen_start, None if top is None else top + 1)
    # (4) Memory.
    if p.seen_gen:
        top = max(p.seen_gen)
        held = {o for o in p.seen_gen if (committed is None or o >= committed) and o <= top}
        assert tracker.pending(tp) <= len(held)
    else:
        assert tracker.pending(tp) == 0


def events(kinds: list[int]) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    event = st.tuples(st.sampled_from(kinds), st.integers(0, 2), st.integers(0, 2**16))
    return st.lists(event, min_size=30, max_size=300)


bases = st.lists(st.sampled_from([0, 1, 1000, 2**40]), min_size=1, max_size=3)


@settings(max_examples=EXAMPLES)
@given(bases, events(ALL_EVENTS))
def test_rejoins_duplicates_and_revokes(bases, evs):
    run(OffsetTracker(), bases, evs)


@settings(max_examples=EXAMPLES)
@given(bases, events(NO_REVOKE))
def test_rejoins_and_duplicates_without_revokes(bases, evs):
    """As Channel.receive uses the tracker: rewinds and duplicates, no forget."""
    run(OffsetTracker(), bases, evs)
