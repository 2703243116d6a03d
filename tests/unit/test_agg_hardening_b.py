"""Aggregation hardening: a duplicate update re-read above the committed offset is
skipped (not folded into a partial the coordinator would refuse whole), updates
not keyed by their client or from unselected clients are refused, no finite
update makes a non-finite model, partials are checked against their sender,
the selection and the model dtype's range, and StreamingFedAvg never keeps half
an update (flwire.aggregation; wire format section 14.4)."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scaleout_tools import REFERENCE, TOPIC, TP, records

from flwire import messages as m
from flwire.aggregation import StreamingFedAvg, UpdatePolicy, UpdateRefused, screen
from flwire.aggregation.combine import RoundCombiner
from flwire.aggregation.intake import (
    MAX_METADATA_BYTES,
    FoldedEntry,
    Intake,
    decode_metadata,
    encode_metadata,
)
from flwire.aggregation.partial import from_partial, to_partial
from flwire.aggregation.screening import is_delta
from flwire.exceptions import AggregationException
from flwire.transport.base import Record

SMALL = {"w": torch.zeros(3)}


def _update(client: str, value: float, round_id: int = 1) -> bytes:
    return m.client_update(
        client, round_id, {"w": torch.full((3,), value)}, num_examples=10
    ).to_bytes()


def _small_intake(**kwargs: object) -> Intake:
    return Intake(lambda r: SMALL if r in (1, 2) else None, **kwargs)  # type: ignore[arg-type]


def _feed(it: Intake, start: int, rows: list[tuple[bytes | None, bytes]]) -> None:
    for offset, (key, value) in enumerate(rows, start=start):
        it.add(Record(TOPIC, 0, offset, key, value, []))


def _wire(msg: m.Message) -> m.Message:
    return m.decode_message(msg.to_bytes())


# -- F2: a duplicate record does not cost a whole partial ------------------------


def test_a_copy_of_a_committed_update_re_read_above_the_offset_is_skipped() -> None:
    c1 = _update("c1", 1.0)
    first = _small_intake()
    _feed(first, 0, [(b"c1", c1), (b"c2", _update("c2", 2.0))])
    partial_a = _wire(to_partial(first.folds[1], "agg-1", 1))
    point = first.commit_point()
    assert point is not None and point[TP][0] == 2
    first.committed(point)
    # The same c1 record re-appears at offset 2; another aggregator (or a restart)
    # reads the partition from the committed offset.
    second = _small_intake()
    second.assigned(TP, point[TP][1])
    _feed(second, 2, [(b"c1", c1), (b"c3", _update("c3", 3.0)), (b"c4", _update("c4", 4.0))])
    assert set(second.folds[1].counts) == {"c3", "c4"}
    assert second.stats["skipped"] == 1
    combiner = RoundCombiner(1, SMALL, ["c1", "c2", "c3", "c4"])
    assert combiner.add(partial_a)
    assert combiner.add(_wire(to_partial(second.folds[1], "agg-2", 1)))
    assert combiner.covered() and combiner.stats == {"merged": 2}
    assert combiner.result()["w"].tolist() == [2.5, 2.5, 2.5]


def test_an_update_not_keyed_by_its_client_is_refused_and_its_offset_moves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    it = _small_intake()
    with caplog.at_level(logging.ERROR):
        _feed(it, 0, [(b"c2", _update("c1", 1.0)), (None, _update("c3", 1.0))])
        _feed(it, 2, [(b"c2", _update("c2", 2.0))])
    assert set(it.folds[1].counts) == {"c2"}
    assert it.stats["misrouted"] == 2
    assert "not by its client id" in caplog.text
    point = it.commit_point()
    assert point is not None and point[TP][0] == 3


def test_every_part_of_a_split_update_must_be_keyed_by_its_client() -> None:
    parts = records("a")
    assert len(parts) > 2
    it = Intake(lambda r: REFERENCE if r == 1 else None)
    for offset, (value, headers) in enumerate(parts):
        key = b"x" if offset == 1 else b"a"  # one part keyed by someone else
        it.add(Record(TOPIC, 0, offset, key, value, headers))
    assert not it.folds and it.stats["misrouted"] == 1


def test_the_metadata_forgets_older_rounds_below_the_offset() -> None:
    it = _small_intake()
    _feed(it, 0, [(b"c1", _update("c1", 1.0))])
    point = it.commit_point()
    assert point is not None
    it.committed(point)
    _feed(it, 1, [(b"c1", _update("c1", 1.0, round_id=2))])
    point = it.commit_point()
    assert point is not None
    assert decode_metadata(point[TP][1]) == [FoldedEntry(2, "c1", 1)]


@settings(max_examples=25, deadline=None)
@given(
    clients=st.integers(1, 400),
    id_len=st.integers(1, 60),
    above=st.integers(0, 40),
)
def test_commit_metadata_never_exceeds_kafkas_limit_and_keeps_what_exactly_once_needs(
    clients: int, id_len: int, above: int
) -> None:
    """Entries above the offset are all kept (or the commit waits); the open
    round's entries below it fill what room is left, newest first."""
    offset = 1_000
    below = [FoldedEntry(3, f"{i:0{id_len}}", offset - 1 - i) for i in range(clients)]
    over = [FoldedEntry(3, f"u{i:0{id_len}}", offset + i) for i in range(above)]
    it = _small_intake()
    it.assigned(TP, None)
    it._committed[TP] = below + over
    it._start[TP] = offset
    it._moved.add(TP)
    point = it.commit_point()
    if len(encode_metadata(over).encode()) > MAX_METADATA_BYTES:
        assert point is None
        return
    assert point is not None
    text = point[TP][1]
    assert len(text.encode("utf-8")) <= MAX_METADATA_BYTES
    kept = decode_metadata(text)
    assert set(over) <= set(kept)
    remembered = [e for e in kept if e.last_offset < offset]
    # Newest first: what is remembered is a prefix of ``below`` (ordered newest first).
    assert sorted(remembered, key=lambda e: -e.last_offset) == below[: len(remembered)]
    if len(remembered) < len(below):  # the next one would not have fit
        assert len(encode_metadata([*kept, below[len(remembered)]]).encode()) > MAX_METADATA_BYTES


# -- F4: the selection, the sender, the range of the sums -----------------------


def test_the_intake_refuses_an_update_of_a_client_not_selected() -> None:
    it = _small_intake(selected=lambda r: ["c1", "c2"] if r == 1 else None)
    _feed(it, 0, [(b"c1", _update("c1", 1.0)), (b"c9", _update("c9", -100.0))])
    _feed(it, 2, [(b"c9", _update("c9", 5.0, round_id=2))])  # round 2: not known
    assert set(it.folds[1].counts) == {"c1"} and set(it.folds[2].counts) == {"c9"}
    assert it.stats["unselected"] == 1


def test_the_aggregator_takes_the_selection_from_its_models_when_not_given() -> None:
    pytest.importorskip("confluent_kafka")
    from flwire.aggregation.aggregator import _selected_of

    class Feed:
        def __call__(self, round_id: int) -> None:
            return None

        def selected(self, round_id: int) -> list[str]:
            return ["c1"]

    assert _selected_of(Feed(), None)(1) == ["c1"]
    assert _selected_of(Feed(), lambda r: ["c2"])(1) == ["c2"]
    assert _selected_of(lambda r: None, None)(1) is None


def _partial(aggregator: str, clients: dict[str, int], sums: list[float]) -> m.Message:
    msg = m.partial_aggregate(
        aggregator, 5, {"w": torch.tensor(sums, dtype=torch.float64)}, clients
    )
    return _wire(msg)


def test_the_combiner_refuses_a_partial_naming_a_client_not_selected() -> None:
    combiner = RoundCombiner(5, SMALL, ["c1"])
    assert not combiner.add(_partial("agg-1", {"c1": 1, "ghost": 1}, [2.0, 2.0, 2.0]))
    assert combiner.stats == {"unselected": 1}
    assert "not selected for the round: ['ghost']" in combiner.refusals[0]
    everyone = RoundCombiner(5, SMALL)  # no selection: every client counts
    assert everyone.add(_partial("agg-1", {"ghost": 1}, [2.0, 2.0, 2.0]))


def test_a_partial_whose_envelope_sender_is_not_its_aggregator_is_refused() -> None:
    msg = m.partial_aggregate("agg-1", 5, {"w": torch.ones(3, dtype=torch.float64)}, {"c1": 1})
    msg.envelope.sender_id = "someone-else"
    with pytest.raises(AggregationException, match="sender_id is 'someone-else'"):
        from_partial(_wire(msg), SMALL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@given(count=st.integers(1, 1000), factor=st.floats(1.001, 1e6))
@settings(max_examples=20, deadline=None)
def test_partial_sums_beyond_the_dtype_range_are_refused_and_honest_extremes_kept(
    dtype: torch.dtype, count: int, factor: float
) -> None:
    reference = {"w": torch.zeros(2, dtype=dtype)}
    top = torch.finfo(dtype).max
    honest = StreamingFedAvg(reference)
    honest.add("c1", {"w": torch.tensor([top, -top], dtype=dtype)}, count)
    assert from_partial(_wire(to_partial(honest, "agg-1", 5)), reference).counts == {"c1": count}
    forged = _partial("agg-1", {"c1": count}, [top * count * factor, 0.0])
    with pytest.raises(AggregationException, match="beyond what"):
        from_partial(forged, reference)


def test_partials_whose_float64_sums_overflow_together_give_no_model() -> None:
    reference = {"w": torch.zeros(2, dtype=torch.float64)}
    combiner = RoundCombiner(5, reference, ["c1", "c2"])
    for aggregator, client in [("agg-1", "c1"), ("agg-2", "c2")]:
        sums = {"w": torch.tensor([1.7e308, 1.0], dtype=torch.float64)}
        assert combiner.add(_wire(m.partial_aggregate(aggregator, 5, sums, {client: 1})))
    with pytest.raises(AggregationException, match="non-finite"):
        combiner.result()


# -- F3: finite updates never make a non-finite model -----------------------------


@pytest.mark.parametrize(
    ("dtype", "base", "delta"),
    [
        (torch.float16, 100.0, 65504.0),
        (torch.bfloat16, 3.0e38, 3.0e38),
        (torch.float32, 2e38, 3.0e38),
    ],
)
def test_screen_refuses_a_delta_that_leaves_the_model_dtype_range(
    dtype: torch.dtype, base: float, delta: float
) -> None:
    reference = {"w": torch.full((2,), base, dtype=dtype)}
    update = _wire(
        m.client_update(
            "c1", 1, {"w": torch.full((2,), delta, dtype=dtype)}, num_examples=5, delta=True
        )
    )
    with pytest.raises(UpdateRefused, match=f"leave the range of {dtype}"):
        screen(update, reference, UpdatePolicy())


@given(base=st.floats(-6e4, 6e4), delta=st.floats(-6e4, 6e4))
@settings(max_examples=60, deadline=None)
def test_a_screened_float16_delta_always_folds_into_a_finite_model(
    base: float, delta: float
) -> None:
    reference = {"w": torch.full((1,), base, dtype=torch.float16)}
    update = _wire(
        m.client_update(
            "c1", 1, {"w": torch.full((1,), delta, dtype=torch.float16)}, num_examples=3, delta=True
        )
    )
    try:
        tensors = screen(update, reference, UpdatePolicy())
    except UpdateRefused:
        return
    fold = StreamingFedAvg(reference)
    fold.add("c1", tensors, 3, delta=is_delta(update))
    assert bool(torch.isfinite(fold.result()["w"]).all())


def test_screen_refuses_float64_weights_whose_weighted_sum_overflows() -> None:
    reference = {"w": torch.zeros(2, dtype=torch.float64)}
    update = _wire(
        m.client_update(
            "c1", 1, {"w": torch.tensor([1.7e308, 0.0], dtype=torch.float64)}, num_examples=2
        )
    )
    with pytest.raises(UpdateRefused, match="overflows float64"):
        screen(update, reference, UpdatePolicy())


def test_fedavg_result_refuses_a_non_finite_average() -> None:
    reference = {"w": torch.zeros(2, dtype=torch.float16)}
    fold = StreamingFedAvg(reference)
    fold.add("c1", {"w": torch.full((2,), 65504.0)}, 1)
    fold.add("c2", {"w": torch.full((2,), 65504.0, dtype=torch.float64)}, 1)
    fold.sums["w"] *= 2  # as if an update beyond float16's range had been folded
    with pytest.raises(AggregationException, match="'w' has 2 non-finite value"):
        fold.result()


# -- F8: StreamingFedAvg never keeps half an update ------------------------------


@given(bad_at=st.integers(0, 3), kind=st.sampled_from(["numpy", "shape", "complex", "nan"]))
@settings(max_examples=30, deadline=None)
def test_a_failed_add_changes_nothing_and_a_retry_counts_once(bad_at: int, kind: str) -> None:
    import numpy as np

    names = ["a", "b", "c", "d"]
    fold = StreamingFedAvg({n: torch.zeros(2) for n in names})
    good = {n: torch.ones(2) for n in names}
    broken: dict[str, object] = dict(good)
    broken[names[bad_at]] = {
        "numpy": np.ones(2, dtype=np.float32),
        "shape": torch.ones(3),
        "complex": torch.ones(2, dtype=torch.complex64),
        "nan": torch.tensor([1.0, float("nan")]),
    }[kind]
    with pytest.raises(AggregationException):
        fold.add("c1", broken, 1)  # type: ignore[arg-type]
    assert not fold.counts and all(not bool(s.any()) for s in fold.sums.values())
    fold.add("c1", good, 1)
    assert all(v.tolist() == [1.0, 1.0] for v in fold.result().values())


def test_add_never_changes_the_callers_float64_tensor() -> None:
    reference = {"w": torch.ones(2, dtype=torch.float64)}
    mine = torch.full((2,), 2.0, dtype=torch.float64)
    fold = StreamingFedAvg(reference)
    fold.add("c1", {"w": mine}, 3, delta=True)
    assert mine.tolist() == [2.0, 2.0]
    assert fold.result()["w"].tolist() == [3.0, 3.0]


@pytest.mark.parametrize(
    "other",
    [{"w": torch.zeros(1)}, {"w": torch.zeros(3, dtype=torch.float64)}],
    ids=["shape", "dtype"],
)
def test_merge_refuses_partials_of_another_shape_or_dtype(other: dict[str, torch.Tensor]) -> None:
    mine = StreamingFedAvg({"w": torch.zeros(3)})
    mine.add("x", {"w": torch.ones(3)}, 1)
    theirs = StreamingFedAvg(other)
    theirs.add("y", {"w": torch.full(other["w"].shape, 5.0, dtype=other["w"].dtype)}, 1)
    with pytest.raises(AggregationException, match="different models"):
        mine.merge(theirs)
    assert mine.counts == {"x": 1} and mine.result()["w"].tolist() == [1.0, 1.0, 1.0]


# -- the demo server refuses an unselected client's update too --------------------


def test_the_demo_server_refuses_an_update_of_a_client_not_selected() -> None:
    from flwire.demo.data import split_non_iid
    from flwire.demo.server import FedAvgServer
    from flwire.transport import InMemoryBroker, InMemoryTransport
    from flwire.transport.layout import TopicLayout

    _, _, test = split_non_iid(2, seed=0)
    server = FedAvgServer(
        InMemoryTransport(InMemoryBroker()), TopicLayout("j"), test, num_clients=2, rounds=1
    )
    server.state.selected[1] = ["client-1"]
    server._fold(1)
    state = server.model.state_dict()
    for client in ("client-1", "client-9"):
        server._screen(_wire(m.client_update(client, 1, state, num_examples=10)))
    assert server.state.updates[1] == {"client-1": 10}
    assert server.state.refused[1] == {"client-9": "not selected for the round"}
