"""Hardening of the scale-out aggregation and of the Verifier (security review):

- F1: a global model is taken from the server's key alone, never from a
  client's key of the same trust store (``Verifier(senders=)``,
  ``BroadcastModels(server_ids=)``, ``flwire aggregator --server-id``);
- F5: an update for a round with no global model does not stall the
  aggregator's thread (``BroadcastModels`` waits once, not per record);
- F6: the coordinator keeps partials of later rounds within bounds, and drops
  those of rounds collected or skipped;
- F7: a message refused for its round is not taken for a replay later.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from flwire import messages, security
from flwire.aggregation.models import BroadcastModels
from flwire.exceptions import AggregationException, ConfigurationException, RefusedMessageError
from flwire.messages import Message
from flwire.security import TrustStore, Verifier
from flwire.transport import Channel, InMemoryTransport, TopicLayout
from flwire.transport.base import Record

CONFIG = {"bootstrap.servers": "127.0.0.1:1"}
KEYS = {
    name: security.private_key_from_seed(bytes([i + 1]) * 32)
    for i, name in enumerate(["server", "client-1", "client-2"])
}


def _trust(*names: str) -> TrustStore:
    return TrustStore({n: KEYS[n].public_key() for n in names or tuple(KEYS)})


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((4,), value)}


def _signed_global(round_id: int, value: float, key_id: str) -> Message:
    msg = messages.global_update(round_id, _state(value), sender_id=key_id)
    security.sign_in_place(msg, key_id, KEYS[key_id])
    return msg


def _reason(verifier: Verifier, payload: bytes) -> str:
    with pytest.raises(RefusedMessageError) as info:
        verifier.verify(payload)
    return info.value.reason


# F1 -------------------------------------------------------------------------


def test_verifier_senders_refuse_a_global_model_signed_by_a_client_key() -> None:
    verifier = Verifier(
        _trust(), timestamp_window_s=None, senders={"global_update": {"server"}}, name="models"
    )
    forged = _signed_global(3, 1000.0, "client-1").to_bytes()
    with pytest.raises(RefusedMessageError) as info:
        verifier.verify(forged)
    assert info.value.reason == "sender_not_allowed"
    text = str(info.value)
    assert "a global_update signed by key 'client-1', which may not send one" in text
    assert "accepts global_update only from 'server'" in text
    assert "--server-id" in text  # the fix is named
    assert asyncio.run(verifier.admit(forged)) is None
    assert verifier.refusals == {"sender_not_allowed": 1}
    # The server's own, and the types not restricted, pass as before.
    assert verifier.verify(_signed_global(3, 0.0, "server").to_bytes()).sender_id == "server"
    update = messages.client_update("client-2", 3, _state(1.0), num_examples=1)
    assert verifier.verify(security.sign_message(update, "client-2", KEYS["client-2"]))
    # Unsigned (signatures optional): the sender id it claims is checked.
    optional = Verifier(_trust(), require_signatures=False, senders={"global_update": "server"})
    claim = messages.global_update(3, _state(1.0), sender_id="client-1").to_bytes()
    assert _reason(optional, claim) == "sender_not_allowed"


@pytest.mark.parametrize(
    ("senders", "text"),
    [
        ({"global_updates": {"server"}}, "not a message type"),
        ({"global_update": set()}, "must name at least one key id"),
    ],
)
def test_verifier_senders_that_cannot_work_are_refused(senders: Any, text: str) -> None:
    with pytest.raises(ConfigurationException, match=text):
        Verifier(_trust(), senders=senders)


def _read_broadcast(models: BroadcastModels, *sent: Message) -> None:
    """What the feed thread does, over an in-memory transport."""

    async def main() -> None:
        transport = InMemoryTransport()
        await transport.start()
        channel = Channel(transport)
        for msg in sent:
            await channel.send_message(models.layout.broadcast, msg)
        receiver = Channel(transport)
        reader = asyncio.ensure_future(models._read(receiver))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if receiver.stats["received"] + receiver.stats["refused"] >= len(sent):
                break
        await asyncio.sleep(0.05)  # the last one handled
        reader.cancel()
        await transport.stop()

    asyncio.run(main())


def test_broadcast_models_take_a_global_model_from_the_server_alone() -> None:
    """The reviewer's reproducer: one trust store of the clients' and the
    server's keys, and client-1 signing a "global model" in its own name."""
    verifier = Verifier(_trust(), timestamp_window_s=None, name="models")
    models = BroadcastModels(CONFIG, TopicLayout("j"), verifier=verifier, wait_s=0)
    _read_broadcast(models, _signed_global(3, 0.0, "server"), _signed_global(3, 1000.0, "client-1"))
    got = models(3)
    assert got is not None and got["w"].tolist() == [0.0] * 4
    assert models.stats["not_from_server"] == 1
    assert verifier.refusals == {"sender_not_allowed": 1}


def test_broadcast_models_server_ids_name_the_server() -> None:
    models = BroadcastModels(CONFIG, TopicLayout("j"), server_ids=["coord"], wait_s=0)
    _read_broadcast(
        models,
        messages.global_update(1, _state(1.0), sender_id="coord"),
        messages.global_update(2, _state(2.0)),  # "server": not the server here
    )
    assert models.rounds() == [1]
    assert models.stats["not_from_server"] == 1
    with pytest.raises(ValueError, match="server_ids must name at least one sender id"):
        BroadcastModels(CONFIG, TopicLayout("j"), server_ids=[])


def _key_dir(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "keys"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.pub").write_bytes(security.public_key_pem(KEYS[name].public_key()))
    return folder


def test_the_aggregator_service_verifies_global_models_against_the_server_ids(
    tmp_path: Path,
) -> None:
    from flwire.aggregation.service import AggregatorOptions, _parts

    keys = _key_dir(tmp_path, "server", "client-1", "client-2")
    _layout, models, _aggregator = _parts(
        AggregatorOptions("127.0.0.1:1", "j", "a", trust=keys), io.StringIO()
    )
    assert models.server_ids == {"server"}
    assert models.verifier is not None
    assert models.verifier.senders == {"global_update": {"server"}}
    forged = _signed_global(3, 1000.0, "client-1").to_bytes()
    assert _reason(models.verifier, forged) == "sender_not_allowed"
    assert models.verifier.verify(_signed_global(3, 0.0, "server").to_bytes()) is not None


def test_flwire_aggregator_needs_the_server_key_in_its_trust_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flwire.cli import _SERVER_ID, main

    assert _SERVER_ID == messages.SERVER_ID
    keys = _key_dir(tmp_path, "server", "client-1")
    argv = ["aggregator", "--bootstrap-servers", "127.0.0.1:1", "--job", "j", "--id", "a"]
    assert main([*argv, "--trust", str(keys), "--server-id", "coord"]) == 2
    err = capsys.readouterr().err
    assert f"the trust store {keys} holds no key of the server ('coord')" in err
    assert "--server-id" in err
    assert main([*argv, "--server-id", ""]) == 2
    assert "--server-id must not be empty" in capsys.readouterr().err


# F5 -------------------------------------------------------------------------


class _CountingCondition(threading.Condition):
    """A Condition that counts the waits made on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        self.waits += 1
        return super().wait_for(predicate, timeout)


def _counting(models: BroadcastModels) -> _CountingCondition:
    models._changed = condition = _CountingCondition()
    return condition


def test_models_wait_once_per_round_and_not_for_rounds_that_cannot_come() -> None:
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=0.01)
    condition = _counting(models)
    models.put(1, _state(1.0))
    # A client's update for round 10**6: one wait, then none for any such round.
    for round_id in (10**6, 10**6, 10**6 + 1, 10**6 + 2):
        assert models(round_id) is None
    assert condition.waits == 1
    assert models(0) is None  # older than the oldest held: at once
    assert condition.waits == 1
    # The next round gets its own wait, once.
    assert models(2) is None
    assert models(2) is None
    assert condition.waits == 2
    assert models.stats == {"waited": 2, "timed_out": 2, "refused_at_once": 5}
    # A global model read: round 2 is returned, and the next round waited for again.
    models.put(2, _state(2.0))
    assert models(2) is not None
    assert models(3) is None
    assert condition.waits == 3


def test_a_round_refused_once_is_refused_at_once_even_with_a_long_wait_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=0.01)
    models.put(1, _state(1.0))
    assert models(10**6) is None  # waited wait_s, then refused
    models.wait_s = 3600.0
    done = threading.Event()

    def ask() -> None:
        for round_id in range(10**6, 10**6 + 10):
            models(round_id)
        done.set()

    threading.Thread(target=ask, daemon=True).start()
    assert done.wait(30), "BroadcastModels waited for rounds that cannot come"
    assert "refused at once, without waiting" in caplog.text


def test_a_feed_catching_up_still_gives_a_round_far_ahead_of_what_it_holds() -> None:
    """After a restart the feed reads the broadcast topic from its start while
    updates of the current round come already: they wait for it."""
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=60)
    models.put(1, _state(1.0))

    def catch_up() -> None:
        for round_id in range(2, 6):
            models.put(round_id, _state(float(round_id)))

    threading.Timer(0.05, catch_up).start()
    got = models(5)
    assert got is not None and got["w"][0] == 5.0


# F6 -------------------------------------------------------------------------


def _partial(round_id: int, client: str = "x", n: int = 1000) -> Record:
    sums = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(round_id))
    msg = messages.partial_aggregate("agg-x", round_id, {"w": sums}, {client: 1})
    return Record("aggregates", 0, round_id, b"k", msg.to_bytes(), [])


def _coordinator(monkeypatch: pytest.MonkeyPatch, batches: list[Record], **kwargs: Any) -> Any:
    import flwire.aggregation.coordinator as co

    queue = list(batches)
    monkeypatch.setattr(co, "poll_batch", lambda _consumer, _t: [queue.pop(0)] if queue else [])
    monkeypatch.setattr(co, "to_records", lambda batch, _what: batch)
    coordinator = co.Coordinator(CONFIG, TopicLayout("j"), **kwargs)
    coordinator._consumer = object()  # type: ignore[assignment]  # never polled: patched
    return coordinator


def test_the_coordinator_keeps_partials_of_the_next_round_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = [_partial(2, "c2"), _partial(3), _partial(10**9), _partial(1, "c1")]
    coordinator = _coordinator(monkeypatch, batches)
    combiner = coordinator.collect(1, {"w": torch.zeros(1000)}, ["c1"], max_wait_s=5)
    assert set(combiner.clients) == {"c1"}
    assert sorted(coordinator._later) == [2]
    assert coordinator.stats["too_early"] == 2


def test_the_coordinator_caps_the_bytes_kept_for_later(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    batches = [_partial(2, "a"), _partial(2, "b"), _partial(1, "c1")]
    coordinator = _coordinator(monkeypatch, batches, max_later_bytes=10_000)
    coordinator.collect(1, {"w": torch.zeros(1000)}, ["c1"], max_wait_s=5)
    assert [len(kept) for kept in coordinator._later.values()] == [1]  # 8 kB each
    assert coordinator.stats["later_full"] == 1
    assert "max_later_bytes=10000" in caplog.text


def test_the_coordinator_drops_partials_of_rounds_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    batches = [_partial(2, "c2"), _partial(1, "c1"), _partial(3, "c3")]
    coordinator = _coordinator(monkeypatch, batches)
    coordinator.collect(1, {"w": torch.zeros(1000)}, ["c1"], max_wait_s=5)
    assert sorted(coordinator._later) == [2]
    # Round 2 is never collected (the server moved on): its partial goes.
    coordinator.collect(3, {"w": torch.zeros(1000)}, ["c3"], max_wait_s=5)
    assert coordinator._later == {}
    assert coordinator._later_bytes == 0
    assert coordinator.stats["later_dropped"] == 1
    assert "Dropped 1 partial(s) of round 2 kept for later: round 3 is collected" in caplog.text


def test_a_round_that_could_not_be_combined_keeps_its_partials_for_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new user's trial: collect() raised for too few clients, and the retry
    found no partial at all (they had been read and dropped)."""
    batches = [_partial(4, "c1"), _partial(4, "c2")]
    coordinator = _coordinator(monkeypatch, batches)
    reference = {"w": torch.zeros(1000)}
    selected = ["c1", "c2", "c3"]
    with pytest.raises(AggregationException, match=r"cover 2 of 3 .*they are kept"):
        coordinator.collect(4, reference, selected, max_wait_s=0.05, min_clients=3)
    combiner = coordinator.collect(4, reference, selected, max_wait_s=0, min_clients=2)
    assert set(combiner.clients) == {"c1", "c2"} and combiner.missing() == ["c3"]
    assert coordinator._later == {} and coordinator._later_bytes == 0


def test_collect_refuses_more_min_clients_than_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = _coordinator(monkeypatch, [_partial(4, "c1")])
    with pytest.raises(ValueError, match=r"min_clients=3 is more than the 2 client\(s\)"):
        coordinator.collect(4, {"w": torch.zeros(1000)}, ["c1", "c2"], max_wait_s=1, min_clients=3)
    assert coordinator.stats == {}  # refused before reading anything


def test_the_coordinator_refuses_negative_bounds() -> None:
    from flwire.aggregation.coordinator import Coordinator

    with pytest.raises(ValueError, match="later_rounds"):
        Coordinator(CONFIG, TopicLayout("j"), later_rounds=-1)


# F7 -------------------------------------------------------------------------


def test_a_round_refusal_does_not_burn_the_message_id() -> None:
    now = {"round": 1}
    verifier = Verifier(_trust(), current_round=lambda: now["round"])
    update = messages.client_update("client-1", 2, _state(1.0), num_examples=3)
    blob = security.sign_message(update, "client-1", KEYS["client-1"])
    assert _reason(verifier, blob) == "round"
    now["round"] = 2
    assert verifier.verify(blob).message_id == update.message_id
    # Admitted once: a replay, whatever its round now.
    assert _reason(verifier, blob) == "replay"
    now["round"] = 3
    assert _reason(verifier, blob) == "replay"


def test_broadcast_models_name_the_clients_the_server_selected() -> None:
    """The TrainingStart of a round names its clients: the aggregator takes them
    from its models (Aggregator(selected=) by default) and refuses the others."""
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=0)
    _read_broadcast(
        models,
        messages.training_start(4, client_ids=["c1", "c2"]),
        messages.training_start(5, client_ids=["c1", "c9"], sender_id="client-9"),
        messages.training_start(6),  # every client
    )
    assert models.selected(4) == {"c1", "c2"}
    assert models.selected(5) is None  # not from the server: refused and counted
    assert models.stats["not_from_server"] == 1
    assert models.selected(6) is None and models.selected(7) is None
