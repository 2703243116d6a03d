"""Issue 14, part 3: client updates are checked before they are aggregated. A
refused update never reaches the average, is named with its reason in the
round's result (the demo prints it under the round's row), and does not make
the round wait for that client."""

from __future__ import annotations

import asyncio

import pytest
import torch

from flwire import messages
from flwire.aggregation.screening import UpdatePolicy
from flwire.demo.data import split_non_iid
from flwire.demo.server import FedAvgServer
from flwire.transport import InMemoryBroker, InMemoryTransport, TopicLayout


def _changed(state: dict[str, torch.Tensor], name: str, value: torch.Tensor):
    out = {k: v.clone() for k, v in state.items()}
    out[name] = value
    return out


def test_bad_updates_are_refused_named_and_left_out_of_the_average():
    _, _, test = split_non_iid(2, seed=0)

    async def main() -> tuple[FedAvgServer, dict[str, torch.Tensor]]:
        transport = InMemoryTransport(InMemoryBroker())
        await transport.start()
        server = FedAvgServer(
            transport,
            TopicLayout("j"),
            test,
            num_clients=7,
            rounds=1,
            min_clients=1,
            policy=UpdatePolicy(max_num_examples=1000, max_distance=10.0),
        )
        server.state.registered = {c: {} for c in "abcdefg"}
        g = {k: v.clone() for k, v in server.model.state_dict().items()}
        near = {k: v + 0.001 if v.is_floating_point() else v for k, v in g.items()}
        nan = _changed(
            near,
            "fc1.weight",
            near["fc1.weight"].clone().index_fill_(0, torch.tensor([3]), float("nan")),
        )
        far = {k: v + 1.0 if v.is_floating_point() else v for k, v in g.items()}
        sends = [
            ("a", near, 10),
            ("b", nan, 10),
            ("c", near, 0),
            ("d", near, 10**15),
            ("e", _changed(near, "conv1.weight", torch.ones(3)), 10),
            ("f", far, 10),
            ("a", far, 10**3),  # a second update of a: the first one counts
            ("g", near, 30),
        ]
        for client, state, count in sends:
            server._record(messages.client_update(client, 1, state, num_examples=count))
        await asyncio.wait_for(server._round(1), 30)
        return server, near

    server, near = asyncio.run(main())
    result = server.results[0]
    assert result.reporting == ["a", "g"] and result.left_out == []
    assert sorted(result.refused) == ["b", "c", "d", "e", "f"]
    reasons = result.refused
    assert "non-finite value(s) in 'fc1.weight'" in reasons["b"]
    assert "num_examples is 0, not positive" in reasons["c"]
    assert "num_examples 1000000000000000 is above the cap 1000" in reasons["d"]
    assert "'conv1.weight' is float32 [3], but the expected layout says" in reasons["e"]
    assert "L2 distance" in reasons["f"] and "above the bound 10" in reasons["f"]
    # Only a's first update and g's were averaged: both are `near`.
    for name, value in server.model.state_dict().items():
        assert torch.isfinite(value.float()).all()
        assert torch.allclose(value.float(), near[name].float(), atol=1e-6), name


def test_the_policy_is_checked():
    with pytest.raises(ValueError, match="max_num_examples"):
        UpdatePolicy(max_num_examples=0)
    with pytest.raises(ValueError, match="max_distance"):
        UpdatePolicy(max_distance=-1.0)
