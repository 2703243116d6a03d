"""StreamingFedAvg (issue 15): updates folded as they arrive, in float64.

Expected values are computed here independently, with numpy in float64 from
the test's own arrays; the tolerance is one ulp of float32 (the module's
docstring says why the fold may differ from another order by that much)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flwire.aggregation import StreamingFedAvg
from flwire.exceptions import AggregationException

SHAPE = (3, 5)
FLOATS = hnp.arrays(
    np.float32,
    SHAPE,
    elements=st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False),
)
UPDATES = st.lists(
    st.tuples(FLOATS, st.integers(1, 100_000), st.integers(0, 9)), min_size=1, max_size=8
)


def _state(w: np.ndarray, n: int = 0) -> dict[str, torch.Tensor]:
    return {"w": torch.from_numpy(w.copy()), "n": torch.tensor(n)}


def _expected(updates: list[tuple[np.ndarray, int, int]]) -> np.ndarray:
    total = sum(n for _, n, _ in updates)
    acc = np.zeros(SHAPE, np.float64)
    for w, n, _ in updates:
        acc += w.astype(np.float64) * n
    return (acc / total).astype(np.float32)


def _within_one_ulp(got: torch.Tensor, want: np.ndarray) -> None:
    got_np = got.numpy()
    assert got_np.dtype == np.float32
    assert np.all(np.abs(got_np - want) <= np.spacing(np.abs(want))), (got_np, want)


def _fold(updates, order, reference) -> StreamingFedAvg:
    fold = StreamingFedAvg(reference)
    for i in order:
        w, n, counter = updates[i]
        fold.add(f"c{i}", _state(w, counter), n)
    return fold


@settings(max_examples=60, deadline=None)
@given(updates=UPDATES, seed=st.integers(0, 2**32 - 1))
def test_the_fold_is_the_weighted_average_in_any_order(updates, seed) -> None:
    reference = _state(np.zeros(SHAPE, np.float32))
    order = list(range(len(updates)))
    first = _fold(updates, order, reference).result()
    np.random.default_rng(seed).shuffle(order)
    second = _fold(updates, order, reference).result()
    want = _expected(updates)
    _within_one_ulp(first["w"], want)
    _within_one_ulp(second["w"], want)
    # integer tensors: the heaviest contributor's value, the smallest id on a tie
    heaviest = max(range(len(updates)), key=lambda i: (updates[i][1], -i))
    assert first["n"].item() == second["n"].item() == updates[heaviest][2]


@settings(max_examples=40, deadline=None)
@given(updates=UPDATES, cut=st.integers(0, 8))
def test_partials_merged_give_the_single_folds_result(updates, cut) -> None:
    """Two aggregators, each folding some clients, merged: the same as one."""
    reference = _state(np.zeros(SHAPE, np.float32))
    cut = min(cut, len(updates))
    left = _fold(updates, range(cut), reference)
    right = _fold(updates, range(cut, len(updates)), reference)
    one = _fold(updates, range(len(updates)), reference).result()
    left.merge(right)
    merged = left.result()
    _within_one_ulp(merged["w"], _expected(updates))
    _within_one_ulp(merged["w"], one["w"].numpy())
    assert merged["n"].item() == one["n"].item()


def test_deltas_are_folded_from_the_reference() -> None:
    g = np.linspace(-1, 1, 15, dtype=np.float32).reshape(SHAPE)
    d1, d2 = np.full(SHAPE, 0.5, np.float32), np.full(SHAPE, -0.25, np.float32)
    fold = StreamingFedAvg(_state(g, 3))
    fold.add("a", _state(d1, 1), 1, delta=True)
    fold.add("b", _state(d2, 0), 3, delta=True)
    want = (g.astype(np.float64) + (0.5 * 1 - 0.25 * 3) / 4).astype(np.float32)
    _within_one_ulp(fold.result()["w"], want)
    assert fold.result()["n"].item() == 3  # b (3 examples): its delta 0 from 3


def test_a_folded_update_is_not_held() -> None:
    fold = StreamingFedAvg(_state(np.zeros(SHAPE, np.float32)))
    update = _state(np.ones(SHAPE, np.float32), 1)
    watch = weakref.ref(update["w"])
    fold.add("a", update, 10)
    del update
    gc.collect()
    assert watch() is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: f.add("a", _state(np.ones(SHAPE, np.float32)), 1), "folded into this round"),
        (lambda f: f.add("b", _state(np.ones(SHAPE, np.float32)), 0), "not in 1.."),
        (lambda f: f.add("b", _state(np.ones(SHAPE, np.float32)), 1 << 29), "not in 1.."),
        (lambda f: f.add("b", {"w": torch.zeros(SHAPE)}, 1), r"missing \['n'\]"),
        (lambda f: f.add("b", _state(np.ones((5, 3), np.float32)), 1), "has shape"),
    ],
    ids=["twice", "zero-examples", "too-many-examples", "missing-tensor", "wrong-shape"],
)
def test_refusals(call, match) -> None:
    fold = StreamingFedAvg(_state(np.zeros(SHAPE, np.float32)))
    fold.add("a", _state(np.ones(SHAPE, np.float32)), 2)
    with pytest.raises(AggregationException, match=match):
        call(fold)
    assert fold.counts == {"a": 2}
    with pytest.raises(AggregationException, match="no client updates"):
        StreamingFedAvg(_state(np.zeros(SHAPE, np.float32))).result()
    other = StreamingFedAvg(_state(np.zeros(SHAPE, np.float32)))
    other.add("a", _state(np.ones(SHAPE, np.float32)), 1)
    with pytest.raises(AggregationException, match="folded twice"):
        fold.merge(other)
