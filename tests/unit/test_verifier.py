"""flwire.security.Verifier, and the receivers that use it: the compat handlers,
Channel.receive and AsyncKafkaClient (issue 14, verification of signed messages).

Each refusal is checked with its reason and its text; a refused message never
reaches the FL object, and its weights are never decoded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwire import messages, security
from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.compat.communication.message_handlers import (
    ClientMessageHandler,
    ServerMessageHandler,
)
from flwire.compat.serialization.message_serializer import MessageSerializer
from flwire.exceptions import (
    ConfigurationException,
    RefusedMessageError,
    SenderMismatchError,
)
from flwire.messages import Message
from flwire.security import Signer, TrustStore, Verifier
from flwire.transport import Channel, InMemoryBroker, InMemoryTransport

KEYS = {
    name: security.private_key_from_seed(bytes([i]) * 32)
    for i, name in enumerate(["server", "client-1", "client-2", "mallory"])
}


def _trust(*names: str) -> TrustStore:
    return TrustStore({n: KEYS[n].public_key() for n in names})


def _update(client: str = "client-1", round_id: int = 1, n: int = 64) -> Message:
    weights = {"w": np.arange(n, dtype=np.float32), "b": np.ones(3, dtype=np.float32)}
    return messages.client_update(client, round_id, weights, num_examples=10)


def _signed(msg: Message, key_id: str | None = None) -> bytes:
    key_id = key_id or msg.sender_id
    return security.sign_envelope(msg.to_bytes(), key_id, KEYS[key_id])


def _refusal(verifier: Verifier, payload: Any) -> tuple[str, str]:
    with pytest.raises(RefusedMessageError) as info:
        verifier.verify(payload)
    return info.value.reason, str(info.value)


def test_each_refusal_has_its_reason_and_says_why() -> None:
    verifier = Verifier(_trust("client-1", "client-2"), current_round=lambda: 1)
    update = _update()
    forged = bytearray(_signed(update))
    forged[len(forged) // 2] ^= 0x01
    impersonation = _update("client-1")
    impersonation.envelope.sender_id = "client-2"
    stale = _update()
    stale.envelope.timestamp.FromSeconds(int(time.time()) - 3600)
    cases = {
        "unsigned": (update.to_bytes(), "the message is not signed"),
        "unknown_key": (_signed(_update("mallory")), "signed with unknown key 'mallory'"),
        "bad_signature": (bytes(forged), "the signature of key 'client-1' does not verify"),
        # client-2's key, in client-2's name, for client-1's update
        "sender_mismatch": (
            _signed(impersonation, "client-2"),
            "client_update.client_id 'client-1' is not the signing key's id 'client-2'",
        ),
        "timestamp": (
            _signed(stale),
            "s behind this receiver's clock, outside its window of 600 s",
        ),
        "round": (_signed(_update(round_id=2)), "an update for round 2 during round 1"),
        "undecodable": (b"\x00\x01", "not a valid flwire message"),
    }
    for reason, (payload, text) in cases.items():
        got, message = _refusal(verifier, payload)
        assert (got, text in message) == (reason, True), (reason, message)
    first = _signed(_update())
    assert verifier.verify(first).sender_id == "client-1"
    assert _refusal(verifier, first) == ("replay", f"message id {_id(first)} was seen before")


def _id(payload: bytes) -> str:
    return messages.decode_message(payload).message_id


def test_unsigned_passes_when_signatures_are_optional_and_nothing_is_checked_without_trust() -> (
    None
):
    optional = Verifier(_trust("client-1"), require_signatures=False)
    assert optional.verify(_update().to_bytes()).type == "client_update"
    # ... but a signed message is still checked
    assert _refusal(optional, _signed(_update("mallory")))[0] == "unknown_key"
    with pytest.raises(ConfigurationException, match="needs a trust store"):
        Verifier(None, require_signatures=True)
    with pytest.raises(ConfigurationException, match="timestamp_window_s"):
        Verifier(_trust("client-1"), timestamp_window_s=0)


def test_concurrent_deliveries_of_one_message_are_admitted_once() -> None:
    verifier = Verifier(_trust("client-1"))
    payload = _signed(_update(n=(2 << 20) // 4))  # 2 MB: verified on worker threads

    async def main() -> list[Message | None]:
        return await asyncio.gather(*(verifier.admit(payload) for _ in range(6)))

    admitted = [m for m in asyncio.run(main()) if m is not None]
    assert len(admitted) == 1
    assert verifier.refusals == {"replay": 5}


def test_a_forgotten_id_is_admitted_again() -> None:
    verifier = Verifier()
    payload = _update().to_bytes()
    verifier.verify(payload)
    verifier.forget(_id(payload))
    assert verifier.verify(payload).type == "client_update"


@settings(max_examples=12, deadline=None)
@given(mask=st.integers(min_value=1, max_value=255))
def test_a_changed_byte_anywhere_in_a_signed_envelope_is_refused(mask: int) -> None:
    """Every position of a small signed message, changed by the same mask: never
    admitted (refused by its signature, or as undecodable when the change breaks
    the envelope before the signature is found)."""
    payload = _signed(_update(n=4))
    trust = _trust("client-1")
    for position in range(len(payload)):
        changed = bytearray(payload)
        changed[position] ^= mask
        with pytest.raises(RefusedMessageError):
            Verifier(trust).verify(bytes(changed))
    for cut in range(len(payload)):
        with pytest.raises(RefusedMessageError):
            Verifier(trust).verify(payload[:cut])


# --- the compat handlers ----------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.current_round = 1
        self.updates: list[tuple[str, int]] = []

    async def process_client_update(self, client_id: str, round_id: int, weights, metrics):
        self.updates.append((client_id, round_id))

    async def register_client(self, client_id: str, info: dict[str, Any]) -> None:
        pass

    async def update_client_heartbeat(self, client_id: str) -> None:
        pass


def _no_weights_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Message, **options: Any) -> None:
        raise AssertionError("weights of a refused message were decoded")

    monkeypatch.setattr(Message, "tensors", refuse)


def test_server_handler_refuses_before_the_server_sees_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _Server()
    verifier = Verifier(_trust("client-1", "client-2"))
    handler = ServerMessageHandler(server, verifier=verifier)
    impersonation = _update("client-1")
    impersonation.envelope.sender_id = "client-2"
    good = _signed(_update("client-1"))
    refused = [
        _update("client-1").to_bytes(),  # unsigned
        _signed(impersonation, "client-2"),  # client-2's key speaking as client-1
        _signed(_update("mallory")),  # unknown key
        _signed(_update("client-2", round_id=0)),  # an old round
    ]

    async def main() -> list[bool]:
        _no_weights_decoded(monkeypatch)
        results = [await handler.handle_message(p) for p in refused]
        monkeypatch.undo()
        results.append(await handler.handle_message(good))
        results.append(await handler.handle_message(good))  # a replay
        return results

    assert asyncio.run(main()) == [False, False, False, False, True, False]
    assert server.updates == [("client-1", 1)]
    assert verifier.refusals == {
        "unsigned": 1,
        "sender_mismatch": 1,
        "unknown_key": 1,
        "round": 1,
        "replay": 1,
    }
    assert handler.stats["refused"] == 5


def test_client_handler_refuses_a_forged_global_update_and_applies_the_real_one_once() -> None:
    applied: list[int] = []

    class Client:
        async def process_global_update(self, round_id: int, weights: Any) -> None:
            applied.append(round_id)

    verifier = Verifier(_trust("server"))
    handler = ClientMessageHandler(Client(), verifier=verifier)
    weights = {"w": np.ones(8, dtype=np.float32)}
    forged = messages.global_update(3, weights, sender_id="mallory")
    in_servers_name = messages.global_update(3, weights)
    real = messages.global_update(2, weights)

    async def main() -> None:
        assert not await handler.handle_message(_signed(forged))
        # mallory's key cannot speak as the server either
        blob = security.sign_envelope(in_servers_name.to_bytes(), "mallory", KEYS["mallory"])
        assert not await handler.handle_message(blob)
        assert not await handler.handle_message(in_servers_name.to_bytes())  # unsigned
        signed = _signed(real)
        assert await handler.handle_message(signed)
        assert not await handler.handle_message(signed)  # delivered again

    asyncio.run(main())
    assert applied == [2]
    assert verifier.refusals == {"unknown_key": 2, "unsigned": 1, "replay": 1}


def test_a_message_whose_handler_failed_is_handled_when_delivered_again() -> None:
    calls: list[int] = []

    class Flaky(_Server):
        async def process_client_update(self, client_id, round_id, weights, metrics):
            calls.append(round_id)
            if len(calls) == 1:
                raise RuntimeError("disk full")

    handler = ServerMessageHandler(Flaky(), verifier=Verifier(_trust("client-1")))
    blob = _signed(_update())

    async def main() -> None:
        with pytest.raises(messages.HandlerError):
            await handler.handle_message(blob)
        assert await handler.handle_message(blob)

    asyncio.run(main())
    assert calls == [1, 1]
    assert handler.verifier is not None and handler.verifier.refusals == {}


# --- Channel.receive and AsyncKafkaClient -------------------------------------------


def test_channel_receive_hands_out_only_verified_deliveries() -> None:
    async def main() -> tuple[list[str], Channel, Verifier]:
        broker = InMemoryBroker()
        transport = InMemoryTransport(broker, max_record_bytes=4096)
        await transport.start()
        channel = Channel(transport)
        verifier = Verifier(_trust("client-1"))
        big = _update(n=5000)  # 20 kB: split into parts
        for payload in [_update().to_bytes(), _signed(_update("mallory")), _signed(big)]:
            await channel.send("t", payload)
        got = []
        async for delivery in channel.receive(["t"], "g", dedupe=False, verifier=verifier):
            assert delivery.message is not None
            got.append(delivery.message.message_id)
            await delivery.done()
            break
        await transport.stop()
        return got, channel, verifier

    got, channel, verifier = asyncio.run(main())
    assert len(got) == 1
    assert channel.stats["refused"] == 2
    assert verifier.refusals == {"unsigned": 1, "unknown_key": 1}


def _key_dir(tmp_path: Path, *names: str) -> Path:
    for name in names:
        security.write_key_pair(name, KEYS[name], tmp_path)
    return tmp_path


def test_async_kafka_client_signs_and_verifies_from_its_config(tmp_path: Path) -> None:
    """A client with ``signing_key`` signs what it sends (bytes from the old
    MessageSerializer too, given its key's id as sender); a server with
    ``trust_store`` hands its handler only what verifies."""
    keys = _key_dir(tmp_path, "client-1", "mallory")
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "client-1.pub").write_bytes((keys / "client-1.pub").read_bytes())
    broker = InMemoryBroker()

    async def main() -> tuple[list[Message], AsyncKafkaClient]:
        server = AsyncKafkaClient(
            {"trust_store": str(trust), "group_id": "server"},
            transport=InMemoryTransport(broker),
        )
        good = AsyncKafkaClient(
            {"signing_key": str(keys / "client-1.key")}, transport=InMemoryTransport(broker)
        )
        bad = AsyncKafkaClient(
            {"signing_key": str(keys / "mallory.key")}, transport=InMemoryTransport(broker)
        )
        plain = AsyncKafkaClient({}, transport=InMemoryTransport(broker))
        for c in (server, good, bad, plain):
            await c.start()
        heartbeat = MessageSerializer.serialize_message(
            "client_heartbeat", {"client_id": "client-1", "status": "idle"}
        )
        await good.send_message("updates", heartbeat)
        await good.send_message("updates", _update())
        await bad.send_message("updates", _update("mallory"))
        await plain.send_message("updates", _update())
        with pytest.raises(SenderMismatchError, match="signs as 'client-1'"):
            await good.send_message("updates", _update("client-2"))
        received: list[Message] = []
        done = asyncio.Event()

        def handler(value: bytes) -> None:
            received.append(messages.decode_message(value))
            if len(received) == 2:
                done.set()

        await server.subscribe_to_topic("updates", handler)
        await asyncio.wait_for(done.wait(), 10)
        while sum(server.refusals.values()) < 2:
            await asyncio.sleep(0.01)
        for c in (server, good, bad, plain):
            await c.stop()
        return received, server

    received, server = asyncio.run(main())
    assert [(m.type, m.sender_id) for m in received] == [
        ("heartbeat", "client-1"),
        ("client_update", "client-1"),
    ]
    assert server.refusals == {"unknown_key": 1, "unsigned": 1}


def test_signer_from_config_names_a_badly_named_key_and_the_env_overrides(tmp_path: Path) -> None:
    security.write_key_pair("client-1", KEYS["client-1"], tmp_path)
    odd = tmp_path / "mykey.pem"
    odd.write_bytes((tmp_path / "client-1.key").read_bytes())
    with pytest.raises(ConfigurationException, match="set key_id too"):
        security.signer_from_config({"signing_key": str(odd)}, {})
    signer = security.signer_from_config({"signing_key": str(odd), "key_id": "client-1"}, {})
    assert isinstance(signer, Signer) and signer.key_id == "client-1"
    from_env = security.signer_from_config(
        {}, {"FLWIRE_SIGNING_KEY": str(tmp_path / "client-1.key")}
    )
    assert from_env is not None and from_env.key_id == "client-1"
    assert security.signer_from_config({}, {}) is None
    assert security.verifier_from_config({}, {}) is None
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationException, match="does not exist"):
        security.verifier_from_config({"trust_store": str(missing)}, {})


def test_a_refusal_logged_by_a_channel_names_the_sender_the_record_claims(caplog) -> None:
    """A new user's trial: "refused a message (unsigned)" named no client."""
    from flwire.messages import heartbeat
    from flwire.security import TrustStore, Verifier, private_key_from_seed
    from flwire.transport import Channel, InMemoryTransport

    trust = TrustStore({"client-1": private_key_from_seed(b"\x01" * 32).public_key()})
    verifier = Verifier(trust, name="server")

    async def main() -> None:
        transport = InMemoryTransport()
        await transport.start()
        await Channel(transport).send_message("t", heartbeat("client-7"))
        async for _ in Channel(transport).receive(["t"], "g", verifier=verifier):
            break

    async def bounded() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(main(), 1.0)

    asyncio.run(bounded())
    assert verifier.refusals == {"unsigned": 1}
    assert "server refused a message claiming to be from 'client-7' (unsigned)" in caplog.text
