"""Issue 14, part 2, in the demo: the FedAvg server verifies every client message
before it reads any weights, and refuses forged, unsigned, tampered, replayed and
off-round updates, each with its reason; a client refuses server messages that the
server's key did not sign, and applies each one once; the signed demo trains as
the unsigned one does."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flwire import messages
from flwire.demo import runner
from flwire.demo.client import DemoClient
from flwire.demo.data import Shard, split_non_iid
from flwire.demo.runner import DemoOptions, run_demo
from flwire.demo.server import FedAvgServer
from flwire.exceptions import ConfigurationException
from flwire.messages import Message, SeenIds
from flwire.security import TrustStore, sign_envelope, sign_message
from flwire.transport import InMemoryBroker, InMemoryTransport, TopicLayout

KEYS = {name: Ed25519PrivateKey.generate() for name in ("server", "client-1", "client-2")}
CLIENT_TRUST = TrustStore({c: KEYS[c].public_key() for c in ("client-1", "client-2")})


def _server(**kwargs: Any) -> FedAvgServer:
    _, _, test = split_non_iid(2, seed=0)
    server = FedAvgServer(
        InMemoryTransport(InMemoryBroker()),
        TopicLayout("j"),
        test,
        num_clients=2,
        rounds=1,
        min_clients=1,
        trust=CLIENT_TRUST,
        **kwargs,
    )
    server.state.registered = {"client-1": {}, "client-2": {}}
    server.current_round = 1
    return server


def _shifted(server: FedAvgServer, by: float) -> dict[str, torch.Tensor]:
    return {
        k: v + by if v.is_floating_point() else v.clone()
        for k, v in server.model.state_dict().items()
    }


def _update(client: str, state: dict[str, torch.Tensor], round_id: int = 1) -> Message:
    return messages.client_update(client, round_id, state, num_examples=10)


def _signed(msg: Message, key_id: str | None = None) -> bytes:
    key_id = key_id or msg.sender_id
    return sign_message(msg, key_id, KEYS[key_id])


def _run_round(server: FedAvgServer) -> None:
    async def main() -> None:
        await server.transport.start()
        await asyncio.wait_for(server._round(1), 30)

    asyncio.run(main())


def _assert_model_is(server: FedAvgServer, state: dict[str, torch.Tensor]) -> None:
    for name, value in server.model.state_dict().items():
        assert torch.allclose(value.float(), state[name].float(), atol=1e-6), name


def test_impersonation_is_refused_named_and_not_waited_for() -> None:
    server = _server(max_wait_time=0.2)
    near, far = _shifted(server, 0.001), _shifted(server, 5.0)
    # client-2's key signing an update that says it comes from client-1.
    as_client_1 = sign_envelope(_update("client-1", far).to_bytes(), "client-2", KEYS["client-2"])
    # client-2 signing as itself, but for client-1 (the body's client_id).
    body_only = _update("client-1", far)
    body_only.envelope.sender_id = "client-2"
    assert asyncio.run(server.accept(as_client_1)) == "sender_mismatch"
    assert asyncio.run(server.accept(_signed(body_only, "client-2"))) == "sender_mismatch"
    assert asyncio.run(server.accept(_signed(_update("client-2", near)))) is None
    _run_round(server)
    result = server.results[0]
    assert result.reporting == ["client-2"]
    assert result.left_out == ["client-1"]  # its own update never came
    assert result.refused == {
        "client-1": "sender_mismatch: client_update.client_id 'client-1' is not the "
        "signing key's id 'client-2'"
    }
    assert server.refusals == {"sender_mismatch": 2}
    _assert_model_is(server, near)


def _flip_in_weights(blob: bytes) -> bytes:
    data = bytearray(blob)
    data[len(data) // 2] ^= 0x01  # the weights are nearly all of the message
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "reason", "text"),
    [
        (lambda u: u.to_bytes(), "unsigned", "unsigned: the message is not signed"),
        (
            lambda u: _flip_in_weights(_signed(u)),
            "bad_signature",
            "bad_signature: the signature of key 'client-1' does not verify",
        ),
        (
            lambda u: sign_envelope(u.to_bytes(), "mallory", Ed25519PrivateKey.generate()),
            "unknown_key",
            "unknown_key: signed with unknown key 'mallory'",
        ),
    ],
    ids=["unsigned", "flipped-weights-byte", "unknown-key"],
)
def test_unverified_updates_are_refused_before_any_weights_are_decoded(
    make: Any, reason: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server(max_wait_time=0.2)
    payload = make(_update("client-1", _shifted(server, 5.0)))

    def no_decoding(self: Message, **options: Any) -> None:
        raise AssertionError("the weights of a refused message were decoded")

    monkeypatch.setattr(Message, "tensors", no_decoding)
    assert asyncio.run(server.accept(payload)) == reason
    monkeypatch.undo()
    assert server.refusals == {reason: 1}
    assert server.state.updates == {}
    assert "client-1" not in server.state.refused.get(1, {})  # not taken as its answer
    assert server.state.unverified[1]["client-1"].startswith(text)


def test_signatures_are_required_by_default_with_a_trust_store_and_can_be_optional() -> None:
    server = _server()
    assert server.verifier.require_signatures
    update = _update("client-1", _shifted(server, 0.001))
    optional = _server(require_signatures=False)
    assert asyncio.run(optional.accept(update.to_bytes())) is None
    assert list(optional.state.updates[1]) == ["client-1"]
    with pytest.raises(ConfigurationException, match="needs a trust store"):
        FedAvgServer(
            InMemoryTransport(),
            TopicLayout("j"),
            server.test,
            num_clients=1,
            rounds=1,
            require_signatures=True,
        )


def test_a_replay_counts_once_and_an_update_for_another_round_is_refused() -> None:
    server = _server()
    near = _shifted(server, 0.001)
    blob = _signed(_update("client-1", near))
    assert asyncio.run(server.accept(blob)) is None
    assert asyncio.run(server.accept(blob)) == "replay"
    # A fresh, genuine update of client-2, but for round 2 while round 1 runs.
    assert asyncio.run(server.accept(_signed(_update("client-2", near, 2)))) == "round"
    assert server.refusals == {"replay": 1, "round": 1}
    assert list(server.state.updates[1]) == ["client-1"]
    assert 2 not in server.state.updates
    reasons = server.state.unverified[1]
    assert reasons["client-1"].startswith("replay: message id ")
    assert reasons["client-1"].endswith(" was seen before")
    assert reasons["client-2"] == "round: an update for round 2 during round 1"


def test_a_replay_in_the_next_round_is_refused_as_a_replay_or_for_its_round() -> None:
    server = _server()
    blob = _signed(_update("client-1", _shifted(server, 0.001)))
    assert asyncio.run(server.accept(blob)) is None
    server.current_round = 2
    assert asyncio.run(server.accept(blob)) == "replay"
    server.verifier.seen = SeenIds()  # its id forgotten: still refused, for its round
    assert asyncio.run(server.accept(blob)) == "round"
    assert server.refusals == {"replay": 1, "round": 1}
    assert server.state.unverified[2]["client-1"] == ("round: an update for round 1 during round 2")
    assert 2 not in server.state.updates


@pytest.mark.parametrize(("shift", "side"), [(-3600.0, "behind"), (3600.0, "ahead of")])
def test_a_signed_message_from_outside_the_time_window_is_refused(shift, side) -> None:
    """An hour-old (or hour-ahead) signed update, its id forgotten, still cannot
    be replayed: its timestamp is signed, and outside the server's window."""
    server = _server(timestamp_window_s=600.0)
    msg = _update("client-1", _shifted(server, 0.001))
    msg.envelope.timestamp.FromNanoseconds(
        msg.envelope.timestamp.ToNanoseconds() + int(shift * 1e9)
    )
    assert asyncio.run(server.accept(_signed(msg))) == "timestamp"
    reason = server.state.unverified[1]["client-1"]
    assert reason.startswith("timestamp: sent at a time 3600 s " + side)
    assert reason.endswith("outside its window of 600 s (timestamp_window_s)")
    assert server.refusals == {"timestamp": 1}
    fresh = _update("client-1", _shifted(server, 0.001))
    assert asyncio.run(server.accept(_signed(fresh))) is None  # within the window


def test_concurrent_deliveries_of_one_update_count_once() -> None:
    server = _server()
    blob = _signed(_update("client-1", _shifted(server, 0.001)))

    async def deliver_five_times() -> list[str | None]:
        # Each verification runs in a thread: all five are in flight at once.
        return await asyncio.gather(*(server.accept(blob) for _ in range(5)))

    outcomes = asyncio.run(deliver_five_times())
    assert sorted(outcomes, key=str) == [None] + ["replay"] * 4
    assert server.refusals == {"replay": 4}
    assert list(server.state.updates[1]) == ["client-1"]


def test_seen_ids_are_bounded_in_bytes() -> None:
    seen = SeenIds(capacity=1000, max_bytes=1000)
    for i in range(50):
        assert seen.first_time(f"{i:03d}" + "x" * 97)
        assert seen.bytes <= 1000
    assert len(seen) == 5  # 100 bytes of id + 100 of overhead each
    assert "049" + "x" * 97 in seen and "044" + "x" * 97 not in seen


# ----------------------------------------------------------------------------- client


def _client(**kwargs: Any) -> DemoClient:
    shard = Shard(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64))
    return DemoClient(
        "client-1",
        InMemoryTransport(),
        TopicLayout("j"),
        shard,
        shard,
        signing_key=KEYS["client-1"],
        server_key=KEYS["server"].public_key(),
        **kwargs,
    )


def test_a_client_refuses_server_messages_the_server_did_not_sign() -> None:
    client = _client()
    before = {k: v.clone() for k, v in client.model.state_dict().items()}
    forged = {k: v + 1.0 if v.is_floating_point() else v for k, v in before.items()}
    genuine = {k: v + 0.5 if v.is_floating_point() else v for k, v in before.items()}
    by_client = messages.global_update(2, forged, sender_id="client-1")
    as_server = sign_envelope(
        messages.global_update(2, forged).to_bytes(), "server", KEYS["client-1"]
    )
    cases = [
        (messages.global_update(2, forged).to_bytes(), "unsigned"),
        (_signed(by_client), "unknown_key"),  # a client's key: not the server's
        (as_server, "bad_signature"),  # a client's key under the server's key id
        (messages.shutdown("forged").to_bytes(), "unsigned"),
        (messages.training_start(2, {}).to_bytes(), "unsigned"),
        (messages.evaluation_request(1).to_bytes(), "unsigned"),
    ]
    for payload, reason in cases:
        assert asyncio.run(client.accept(payload)) == reason
    assert client.refusals == {"unsigned": 4, "unknown_key": 1, "bad_signature": 1}
    assert not client.stopped.is_set()
    assert client._training is None
    for name, value in client.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    update = _signed(messages.global_update(2, genuine))
    assert asyncio.run(client.accept(update)) is None
    assert asyncio.run(client.accept(update)) == "replay"
    assert client.refusals["replay"] == 1
    for name, value in client.model.state_dict().items():
        assert torch.allclose(value.float(), genuine[name].float()), name
    assert asyncio.run(client.accept(_signed(messages.shutdown("done")))) is None
    assert client.stopped.is_set()


def test_a_client_applies_concurrent_deliveries_of_a_global_update_once() -> None:
    client = _client()
    applied: list[int] = []
    original = client.handler.routes["global_update"]

    async def counting(msg: Message) -> None:
        applied.append(msg.body.round_id)
        await original(msg)

    client.handler.routes["global_update"] = counting
    update = _signed(messages.global_update(1, client.model.state_dict()))

    async def three() -> list[str | None]:
        return await asyncio.gather(*(client.accept(update) for _ in range(3)))

    assert sorted(asyncio.run(three()), key=str) == [None, "replay", "replay"]
    assert applied == [1]


def test_a_signing_client_signs_what_it_sends() -> None:
    client = _client()
    sent: list[bytes] = []

    async def keep(topic: str, msg: Message) -> int:
        sent.append(msg.to_bytes())
        return 0

    client.channel.send_message = keep  # type: ignore[method-assign]
    asyncio.run(client._send("t", messages.heartbeat("client-1", "idle")))
    server = _server()
    assert asyncio.run(server.accept(sent[0])) is None
    assert server.refusals == {}


# ----------------------------------------------------------------------------- demo


def _accuracies(sign: bool) -> tuple[list[str], str]:
    out = io.StringIO()
    opts = DemoOptions(clients=2, rounds=2, local_epochs=1, seed=3, sign=sign)
    assert run_demo(opts, out, io.StringIO()) in (0, 1), out.getvalue()
    rows = [line.split() for line in out.getvalue().splitlines()]
    return [r[2] for r in rows if len(r) > 2 and r[0].isdigit() and r[2].endswith("%")], (
        out.getvalue()
    )


def test_the_signed_demo_completes_its_rounds_with_the_unsigned_accuracies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folders: list[tuple[Path, int, list[str]]] = []
    make_keys = runner._make_keys

    def recording(folder: Path, clients: int) -> Any:
        keys = make_keys(folder, clients)
        modes = sorted(  # a public key's mode depends on the umask
            f"{p.name} {p.stat().st_mode & 0o777:o}" if p.suffix == ".key" else p.name
            for p in folder.iterdir()
        )
        folders.append((folder, folder.stat().st_mode & 0o777, modes))
        return keys

    monkeypatch.setattr(runner, "_make_keys", recording)
    signed, text = _accuracies(sign=True)
    ((folder, mode, files),) = folders
    assert mode == 0o700 and not folder.exists()  # private to the run, removed after it
    assert files == [
        "client-0.key 600",
        "client-0.pub",
        "client-1.key 600",
        "client-1.pub",
        "server.key 600",
        "server.pub",
    ]
    unsigned, _ = _accuracies(sign=False)
    assert len(signed) == 2 and signed == unsigned, text
    assert "transport: in-memory, signed messages" in text
    assert "messages refused" not in text


def test_flwire_demo_sign_turns_signing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwire import cli

    seen: list[DemoOptions] = []

    def run_demo(opts: DemoOptions) -> int:
        seen.append(opts)
        return 0

    monkeypatch.setattr(runner, "run_demo", run_demo)
    assert cli.main(["demo", "--clients", "2", "--rounds", "1", "--sign"]) == 0
    assert cli.main(["demo", "--clients", "2", "--rounds", "1"]) == 0
    assert [o.sign for o in seen] == [True, False]


def test_streamed_updates_are_verified_by_their_seal_and_folded() -> None:
    """A client that sends with EncodeOptions(stream=True) gets its update folded:
    the server verifies the stream's seal signature, as it verifies a whole
    message's. Before, a streamed update had no payload bytes to verify and was
    refused as undecodable. Unsigned and forged streams are refused and named."""
    from flwire.security import sign_in_place
    from flwire.security.signing import StreamSigner
    from flwire.tensors import EncodeOptions
    from flwire.transport import Channel

    server = _server(max_wait_time=0.2)
    stream = EncodeOptions(stream=True)
    near = _shifted(server, 0.001)
    good = messages.client_update("client-1", 1, near, num_examples=10, options=stream)
    sign_in_place(good, "client-1", KEYS["client-1"])
    unsigned = messages.client_update("client-2", 1, near, num_examples=10, options=stream)
    forged = messages.client_update("client-2", 1, near, num_examples=10, options=stream)
    forged.sign_stream(lambda: StreamSigner("client-2", KEYS["client-1"]))

    async def main() -> None:
        await server.transport.start()
        listener = asyncio.create_task(server._listen())
        assert isinstance(server.transport, InMemoryTransport)
        sender = Channel(InMemoryTransport(server.transport.broker))
        await sender.transport.start()
        for msg in (unsigned, forged, good):
            await sender.send_message(server.layout.updates, msg)
        while "client-1" not in server.state.updates.get(1, {}) or len(server.refusals) < 2:
            await asyncio.sleep(0.01)
        assert sender.stats["sent_parts"] > 3 * 3  # three streams of several records
        listener.cancel()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert server.state.updates == {1: {"client-1": 10}}
    assert server.refusals == {"unsigned": 1, "bad_signature": 1}
    assert set(server.state.unverified[1]) == {"client-2"}
    fold = server.state.folds[1]
    assert fold is not None and fold.counts == {"client-1": 10}
