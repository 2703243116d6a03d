"""``flwire.tensors.split_state_dict``: a state dict cut, in order, into dicts of
at most ``max_raw_bytes`` raw bytes each, for models whose encoded weights do
not fit in one message (docs/wire-format.md section 12)."""

from __future__ import annotations

import numpy as np
import torch
from helpers import tensor_bytes
from hypothesis import given
from hypothesis import strategies as st

from flwire.tensors import decode_tensor_map, encode_tensor_map, read_tensor_map, split_state_dict


def raw_size(value) -> int:
    """Raw bytes of a tensor as the encoder writes them (C order, every element)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.size * value.dtype.itemsize
    return value.numel() * value.element_size()


def as_torch(value) -> torch.Tensor:
    """A tensor with the values of a torch tensor or a numpy array (little-endian)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.ascontiguousarray(value, value.dtype.newbyteorder("<")))


def check_split(state: dict, groups: list[dict], limit: int) -> None:
    """The properties every split must have."""
    # Order and identity: the groups, one after the other, are the state dict.
    flat = [(name, value) for group in groups for name, value in group.items()]
    assert [name for name, _ in flat] == list(state)
    assert all(value is state[name] for name, value in flat)
    assert all(group for group in groups) or groups == [{}]
    for i, group in enumerate(groups):
        size = sum(raw_size(v) for v in group.values())
        # Under the limit, unless the group is one tensor larger than the limit.
        assert size <= limit or len(group) == 1, (i, size, limit)
        if len(group) == 1 and size > limit:
            assert raw_size(next(iter(group.values()))) > limit
        # No needless cut: the next group's first tensor did not fit in this one.
        if i + 1 < len(groups):
            first = next(iter(groups[i + 1].values()))
            assert size + raw_size(first) > limit, (i, size, raw_size(first), limit)


def test_order_is_kept_and_groups_stay_under_the_limit():
    state = {f"layer{i}.weight": torch.full((25,), float(i)) for i in range(10)}  # 100 B each
    groups = split_state_dict(state, max_raw_bytes=250)
    assert [list(g) for g in groups] == [
        ["layer0.weight", "layer1.weight"],
        ["layer2.weight", "layer3.weight"],
        ["layer4.weight", "layer5.weight"],
        ["layer6.weight", "layer7.weight"],
        ["layer8.weight", "layer9.weight"],
    ]
    check_split(state, groups, 250)


def test_a_group_may_reach_the_limit_exactly():
    state = {"a": np.zeros(10, np.float32), "b": np.zeros(15, np.float32), "c": np.zeros(1, "u1")}
    groups = split_state_dict(state, max_raw_bytes=100)
    assert [list(g) for g in groups] == [["a", "b"], ["c"]]
    check_split(state, groups, 100)


def test_a_tensor_larger_than_the_limit_is_alone_in_its_group():
    state = {
        "small0": torch.zeros(10, dtype=torch.uint8),
        "huge": torch.zeros(1000, dtype=torch.uint8),
        "small1": torch.zeros(10, dtype=torch.uint8),
        "small2": torch.zeros(10, dtype=torch.uint8),
    }
    groups = split_state_dict(state, max_raw_bytes=100)
    assert [list(g) for g in groups] == [["small0"], ["huge"], ["small1", "small2"]]
    check_split(state, groups, 100)
    # Two large tensors in a row each get a group of their own.
    twice = {"x": np.zeros(300, "u1"), "y": np.zeros(300, "u1")}
    assert [list(g) for g in split_state_dict(twice, max_raw_bytes=100)] == [["x"], ["y"]]


def test_empty_state_dict_is_one_empty_group():
    groups = split_state_dict({}, max_raw_bytes=100)
    # One empty map: a model with no tensors still travels as one (empty) message.
    assert groups == [{}]
    assert encode_tensor_map(groups[0]) == b""
    assert decode_tensor_map(encode_tensor_map(groups[0])) == {}


def test_default_limit_keeps_a_small_model_in_one_group():
    state = {"w": torch.randn(64, 64), "b": np.zeros(64, np.float32)}
    groups = split_state_dict(state)
    assert len(groups) == 1 and list(groups[0]) == ["w", "b"]
    assert groups[0]["w"] is state["w"] and groups[0]["b"] is state["b"]


def test_numpy_and_torch_values_count_their_raw_bytes():
    state = {
        "np_f64": np.zeros(4, "<f8"),  # 32
        "np_be": np.zeros(4, ">i4"),  # 16 (big-endian counts the same)
        "t_bf16": torch.zeros(8, dtype=torch.bfloat16),  # 16
        "t_view": torch.zeros(4, 4)[:, :1],  # 16: a non-contiguous view counts its elements
        "t_expanded": torch.zeros(1, 4).expand(4, 4),  # 64: every element is sent
        "np_scalar": np.float32(1.0),  # 4
        "t_empty": torch.zeros(0, 3),  # 0
        "t_c64": torch.zeros(2, dtype=torch.complex64),  # 16
    }
    sizes = [32, 16, 16, 16, 64, 4, 0, 16]
    assert [raw_size(v) for v in state.values()] == sizes
    assert read_tensor_map(encode_tensor_map(state, compression="none")).raw_bytes == sum(sizes)
    groups = split_state_dict(state, max_raw_bytes=48)
    assert [list(g) for g in groups] == [
        ["np_f64", "np_be"],
        ["t_bf16", "t_view"],
        ["t_expanded"],
        ["np_scalar", "t_empty", "t_c64"],
    ]


_DTYPES = ["u1", "<i2", "<f4", ">f8", "torch.float16", "torch.bfloat16", "torch.int64"]


@st.composite
def state_dicts(draw) -> dict:
    state: dict[str, torch.Tensor | np.ndarray] = {}
    for i in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(_DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 40), max_size=2)))
        if kind.startswith("torch."):
            state[f"t{i}"] = torch.ones(shape, dtype=getattr(torch, kind.removeprefix("torch.")))
        else:
            state[f"t{i}"] = np.ones(shape, dtype=kind)
    return state


@given(state=state_dicts(), limit=st.integers(0, 400))
def test_every_split_keeps_order_limits_and_tensors(state, limit):
    groups = split_state_dict(state, max_raw_bytes=limit)
    check_split(state, groups, limit)
    # Every group is a map the codec writes and reads back, within the limit.
    decoded = {}
    for group in groups:
        data = encode_tensor_map(group)
        view = read_tensor_map(data)
        assert view.raw_bytes <= limit or len(group) == 1
        decoded.update(decode_tensor_map(data))
    assert list(decoded) == list(state)
    for name, value in state.items():
        assert tensor_bytes(decoded[name]) == tensor_bytes(as_torch(value)), name


def test_empty_tensors_and_tiny_limits():
    state = {"a": torch.ones(2), "b": torch.ones(3), "empty": torch.ones(0), "c": torch.ones(1)}
    # Limit 0: every tensor alone (the group of b is already over the limit when
    # the empty tensor comes, so it starts the next one, which c then cannot join).
    groups = split_state_dict(state, max_raw_bytes=0)
    assert [list(g) for g in groups] == [["a"], ["b"], ["empty"], ["c"]]
    check_split(state, groups, 0)
    # An empty tensor joins a group that is within the limit.
    groups = split_state_dict(state, max_raw_bytes=8)
    assert [list(g) for g in groups] == [["a"], ["b"], ["empty", "c"]]
    check_split(state, groups, 8)
    groups = split_state_dict({"a": torch.ones(2), "e": torch.ones(0)}, max_raw_bytes=8)
    assert [list(g) for g in groups] == [["a", "e"]]
