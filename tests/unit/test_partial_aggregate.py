"""PartialAggregate (wire format section 14.4): a fold's sums travel exactly and
are checked before they are merged (flwire.aggregation.partial)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flwire import messages as m
from flwire.aggregation import StreamingFedAvg
from flwire.aggregation.partial import from_partial, to_partial
from flwire.exceptions import AggregationException
from flwire.v1 import messages_pb2 as pb

REFERENCE = {
    "w": torch.zeros(3, 4),
    "b": torch.zeros(4, dtype=torch.float16),
    "steps": torch.tensor(0, dtype=torch.int64),
}


def update(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 4, generator=g),
        "b": torch.randn(4, generator=g).half(),
        "steps": torch.tensor(seed * 10, dtype=torch.int64),
    }


COUNTS = {"c1": 600, "c2": 400, "c3": 250, "c4": 900}


def fold(clients: list[str]) -> StreamingFedAvg:
    f = StreamingFedAvg(REFERENCE)
    for c in clients:
        f.add(c, update(int(c[1:])), COUNTS[c])
    return f


def wire(f: StreamingFedAvg, round_id: int = 3) -> m.Message:
    return m.decode_message(to_partial(f, "agg-1", round_id).to_bytes())


def test_round_trip_keeps_the_sums_bit_for_bit() -> None:
    f = fold(["c1", "c2"])
    msg = wire(f)
    assert msg.type == "partial_aggregate"
    assert msg.sender_id == "agg-1"
    assert (msg.body.round_id, msg.body.aggregator_id) == (3, "agg-1")
    assert {c.client_id: c.num_examples for c in msg.body.clients} == {"c1": 600, "c2": 400}
    sums = msg.tensors()
    assert sums["w"].dtype == torch.float64 and sums["b"].dtype == torch.float64
    back = from_partial(msg, REFERENCE)
    for name in ("w", "b"):
        assert torch.equal(back.sums[name], f.sums[name])
    # The integer tensor: the heaviest contributor's value (c1: 600 > 400), named.
    assert [(h.tensor, h.client_id, h.num_examples) for h in msg.body.heaviest] == [
        ("steps", "c1", 600)
    ]
    assert int(back.heaviest["steps"].value) == 10
    assert back.counts == f.counts


def test_merged_partials_equal_numpys_weighted_average() -> None:
    total = StreamingFedAvg(REFERENCE)
    total.merge(from_partial(wire(fold(["c1", "c3"])), REFERENCE))
    total.merge(from_partial(wire(fold(["c2", "c4"])), REFERENCE))
    result = total.result()
    n = np.array([COUNTS[c] for c in ("c1", "c2", "c3", "c4")], dtype=np.float64)
    for name in ("w", "b"):
        stacked = np.stack([update(i)[name].double().numpy() for i in (1, 2, 3, 4)])
        expected = np.tensordot(n, stacked, axes=1) / n.sum()
        got = result[name].double().numpy()
        ulp = np.spacing(np.abs(expected).astype(result[name].numpy().dtype)).astype(np.float64)
        assert np.all(np.abs(got - expected) <= ulp), name
    assert int(result["steps"]) == 40  # c4 holds the most examples (900)


def test_a_merge_refuses_clients_merged_already() -> None:
    total = StreamingFedAvg(REFERENCE)
    total.merge(from_partial(wire(fold(["c1", "c2"])), REFERENCE))
    with pytest.raises(AggregationException, match=r"folded twice: \['c2'\]"):
        total.merge(from_partial(wire(fold(["c2", "c3"])), REFERENCE))
    assert set(total.counts) == {"c1", "c2"}


def edited(change: str) -> m.Message:
    """A partial of c1 and c2 with one thing wrong."""
    f = fold(["c1", "c2"])
    sums: dict[str, torch.Tensor] = dict(f.sums)
    sums["steps"] = f.heaviest["steps"].value
    clients = dict(f.counts)
    heaviest = [("steps", "c1", 600)]
    kind = pb.WEIGHTS_KIND_UNSPECIFIED
    if change == "float32 sums":
        sums["w"] = sums["w"].float()
    elif change == "nan":
        sums["w"] = sums["w"].clone()
        sums["w"][0, 0] = float("nan")
    elif change == "missing tensor":
        del sums["b"]
    elif change == "shape":
        sums["w"] = sums["w"].reshape(4, 3)
    elif change == "no contributor":
        heaviest = []
    elif change == "unknown contributor":
        heaviest = [("steps", "c9", 600)]
    elif change == "wrong count":
        heaviest = [("steps", "c1", 601)]
    elif change == "contributor of a sum":
        heaviest.append(("w", "c1", 600))
    elif change == "zero examples":
        clients["c2"] = 0
    elif change == "no clients":
        clients = {}
        heaviest = []
    elif change == "integer dtype":
        sums["steps"] = sums["steps"].int()
    elif change == "delta":
        kind = pb.WEIGHTS_KIND_DELTA
    msg = m.partial_aggregate("agg-1", 3, sums, clients, heaviest)
    msg.body.weights_kind = kind
    return m.decode_message(msg.to_bytes())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("float32 sums", "not float64"),
        ("nan", "non-finite"),
        ("missing tensor", r"missing \['b'\]"),
        ("shape", "has shape"),
        ("no contributor", "names no contributor"),
        ("unknown contributor", "not among the folded clients"),
        ("wrong count", "not among the folded clients"),
        ("contributor of a sum", "it has no contributor"),
        ("zero examples", "not in 1.."),
        ("no clients", "no clients folded"),
        ("integer dtype", "not torch.int64"),
        ("delta", "deltas are not supported"),
    ],
)
def test_a_bad_partial_is_refused_with_its_reason(change: str, reason: str) -> None:
    with pytest.raises(AggregationException, match=reason):
        from_partial(edited(change), REFERENCE)


def test_an_empty_fold_has_no_partial() -> None:
    with pytest.raises(AggregationException, match="empty fold"):
        to_partial(StreamingFedAvg(REFERENCE), "agg-1", 1)


def test_only_partial_aggregates_are_read() -> None:
    with pytest.raises(AggregationException, match="expected a partial_aggregate"):
        from_partial(m.shutdown("bye"), REFERENCE)
