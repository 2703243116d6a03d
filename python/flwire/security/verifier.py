"""Checking a received message before anything handles it.

A :class:`Verifier` holds what a receiver trusts and remembers, and refuses,
before any weights are decoded:

- an unsigned message, when signatures are required (``unsigned``);
- a key it does not trust (``unknown_key``), a bad signature
  (``bad_signature``), a ``sender_id`` or ``client_id`` that is not the key's
  id (``sender_mismatch``) — wire format section 14.3;
- a message of a type that ``senders`` restricts, from a key id not allowed
  to send it (``sender_not_allowed``): a trust store that holds the clients'
  keys and the server's proves who sent a message, not that a client may send
  a global model, so a receiver that trusts both says which key ids may send
  what, e.g. ``senders={"global_update": {"server"}}``;
- bytes that are not a valid message (``undecodable``);
- a message whose timestamp is further than ``timestamp_window_s`` from the
  receiver's clock (``timestamp``), so that an old signed message cannot be
  replayed once its id is forgotten (only checked for signed messages: an
  unsigned timestamp proves nothing);
- a message id seen before (``replay``), in a store bounded in ids and bytes
  (:class:`~flwire.messages.dedupe.SeenIds`), checked and marked in one
  synchronous step, so two concurrent deliveries of one message count once;
- a client update for another round than ``current_round()`` (``round``).

A message's id is marked seen only once every check passed: a message
refused for its round (or its sender, its signature...) is refused for that
again when it comes again, not taken for a replay; one admitted before is a
replay, whatever its round.

Each refusal raises a :class:`~flwire.exceptions.RefusedMessageError` whose
``reason`` is the word above; :meth:`Verifier.admit` logs it and counts it in
:attr:`Verifier.refusals` instead. A receiver whose handling of an admitted
message failed calls :meth:`Verifier.forget` so that its redelivery is not
taken for a replay.

    verifier = Verifier(load_trust_store(Path("keys")), current_round=lambda: server.round)
    msg = await verifier.admit(payload)      # a Message, or None (logged and counted)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from flwire.exceptions import (
    ConfigurationException,
    RefusedMessageError,
    ReplayedMessageError,
    SerializationException,
    StaleMessageError,
    UndecodableMessageError,
    WrongRoundError,
)
from flwire.messages.dedupe import SeenIds
from flwire.messages.message import Message, decode_message
from flwire.messages.schema import BODY_TYPES
from flwire.security.signing import (
    check_sender,
    require_trust,
    verify_envelope,
    verify_stream,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from flwire.v1 import messages_pb2 as pb

logger = logging.getLogger(__name__)

#: Default bound on a signed message's clock skew, in seconds.
DEFAULT_TIMESTAMP_WINDOW_S = 600.0
#: Envelopes at least this large are verified on a worker thread (hashing the
#: weights takes a while); smaller ones on the caller's.
THREAD_AT_BYTES = 1 << 20


class SenderNotAllowedError(RefusedMessageError):
    """A message of a type that the receiver accepts from some key ids only
    (``Verifier(senders=...)``), signed by (or, unsigned, claiming) another
    one: a client's trusted key signing a global model, say."""

    reason = "sender_not_allowed"


class Verifier:
    """Verifies, de-duplicates and screens received messages (see the module).

    ``trust``: public keys by key id (a :class:`~flwire.security.TrustStore`),
    or None to check no signatures. ``require_signatures`` (default: whether
    there is a trust store) refuses unsigned messages. ``current_round``
    returns the round in progress (None: not checked). ``senders`` maps
    message types to the key ids allowed to send them (a type not named: any
    trusted key); a signed message is checked by its key id, an unsigned one
    (signatures optional) by the ``sender_id`` it claims. ``seen`` is the
    replay store (default: a fresh :class:`SeenIds`). ``name`` prefixes log
    lines.
    """

    def __init__(
        self,
        trust: Mapping[str, Ed25519PublicKey] | None = None,
        *,
        require_signatures: bool | None = None,
        timestamp_window_s: float | None = DEFAULT_TIMESTAMP_WINDOW_S,
        current_round: Callable[[], int | None] | None = None,
        seen: SeenIds | None = None,
        senders: Mapping[str, Collection[str]] | None = None,
        name: str = "receiver",
    ) -> None:
        self.trust = trust if trust is None else require_trust(trust)
        self.require_signatures = (
            trust is not None if require_signatures is None else (require_signatures)
        )
        if self.require_signatures and trust is None:
            raise ConfigurationException(
                "require_signatures needs a trust store of the senders' public keys"
            )
        if timestamp_window_s is not None and timestamp_window_s <= 0:
            raise ConfigurationException(
                f"timestamp_window_s must be positive or None, not {timestamp_window_s}"
            )
        self.timestamp_window_s = timestamp_window_s
        self.current_round = current_round
        #: The key ids allowed to send each restricted message type.
        self.senders = _senders(senders)
        self.seen = seen if seen is not None else SeenIds()
        self.name = name
        #: Refused messages, by reason.
        self.refusals: Counter[str] = Counter()

    def check_signature(self, payload: Any) -> str | None:
        """Verify the signature of envelope bytes: the key id, or None for an
        unsigned message (when not required). Decodes nothing."""
        if self.trust is None:
            return None
        return verify_envelope(payload, self.trust, required=self.require_signatures)

    def check(self, payload: Any, key_id: str | None, *, remember: bool = True) -> Message:
        """Decode a message whose signature gave ``key_id`` and apply the other
        checks; mark its id seen. Synchronous: nothing can interleave between
        the replay check and the mark. ``remember=False`` skips the replay check
        (for a receiver that reads records again on purpose, and de-duplicates
        by other means: the scale-out aggregators)."""
        try:
            msg = decode_message(payload)
        except SerializationException as exc:
            raise UndecodableMessageError(str(exc)) from exc
        return self.check_message(msg, key_id, remember=remember)

    def check_message(self, msg: Message, key_id: str | None, *, remember: bool = True) -> Message:
        """:meth:`check` of a message decoded already (a streamed transfer's)."""
        if key_id is not None:
            check_sender(msg, key_id)
            self._check_time(msg)
        self._check_allowed(msg, key_id)
        if remember and msg.message_id in self.seen:
            raise ReplayedMessageError(f"message id {msg.message_id} was seen before")
        self._check_round(msg)
        # Marked only once every check passed (nothing can interleave since the
        # look above: this is synchronous): a message refused for its round is
        # refused for that again when it comes again, not taken for a replay.
        if remember and not self.seen.first_time(msg.message_id):
            raise ReplayedMessageError(f"message id {msg.message_id} was seen before")
        return msg

    def _check_allowed(self, msg: Message, key_id: str | None) -> None:
        allowed = self.senders.get(msg.type)
        if allowed is None:
            return
        sender = key_id if key_id is not None else msg.sender_id
        if sender in allowed:
            return
        who = f"signed by key {sender!r}" if key_id is not None else f"unsigned, from {sender!r}"
        raise SenderNotAllowedError(
            f"a {msg.type} {who}, which may not send one: {self.name} accepts "
            f"{msg.type} only from {', '.join(map(repr, sorted(allowed)))} (senders=); "
            "if that key is the one that should send it, add its id there "
            "(flwire aggregator: --server-id)"
        )

    def _check_round(self, msg: Message) -> None:
        round_now = self.current_round() if self.current_round is not None else None
        if msg.type == "client_update" and round_now is not None:
            if msg.body.round_id != round_now:
                raise WrongRoundError(
                    f"an update for round {msg.body.round_id} during round {round_now}"
                )

    def _check_time(self, msg: Message) -> None:
        if self.timestamp_window_s is None:
            return
        stamp = msg.envelope.timestamp
        skew = stamp.seconds + stamp.nanos / 1e9 - time.time()
        if abs(skew) > self.timestamp_window_s:
            raise StaleMessageError(
                f"sent at a time {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
                f"this receiver's clock, outside its window of {self.timestamp_window_s:g} s "
                "(timestamp_window_s)"
            )

    def verify(self, payload: Any, *, remember: bool = True) -> Message:
        """All the checks, on the caller's thread; raises RefusedMessageError."""
        return self.check(payload, self.check_signature(payload), remember=remember)

    async def averify(self, payload: Any) -> Message:
        """All the checks; a large message's signature is verified on a worker
        thread (the rest runs on the event loop, in one step). Raises
        RefusedMessageError."""
        if self.trust is not None and _size(payload) >= THREAD_AT_BYTES:
            key_id = await asyncio.to_thread(self.check_signature, payload)
        else:
            key_id = self.check_signature(payload)
        return self.check(payload, key_id)

    async def admit(self, payload: Any) -> Message | None:
        """:meth:`averify`, with a refusal logged and counted instead of raised."""
        try:
            return await self.averify(payload)
        except RefusedMessageError as exc:
            self.refuse(exc)
            return None

    def verify_streamed(
        self,
        msg: Message,
        signature: pb.Signature | None,
        digest: bytes | None,
        *,
        remember: bool = True,
    ) -> Message:
        """All the checks of a message that came as a streamed transfer (wire
        format 14.5): its seal's ``signature`` over the ``digest`` of its records
        (None: unsigned), then those of :meth:`check` (``remember`` as there).
        Raises RefusedMessageError."""
        key_id = None
        if self.trust is not None:
            key_id = verify_stream(signature, digest, self.trust, required=self.require_signatures)
        return self.check_message(msg, key_id, remember=remember)

    def admit_streamed(
        self,
        msg: Message,
        signature: pb.Signature | None,
        digest: bytes | None,
        *,
        remember: bool = True,
    ) -> Message | None:
        """:meth:`verify_streamed`, with a refusal logged and counted instead of
        raised (None returned)."""
        try:
            return self.verify_streamed(msg, signature, digest, remember=remember)
        except RefusedMessageError as exc:
            self.refuse(exc)
            return None

    def refuse(self, exc: RefusedMessageError, *, claimed: str | None = None) -> None:
        """Log and count a refusal; ``claimed``: the sender id the message's
        record claims (its ``flwire-sender-id`` header), named in the log line."""
        self.refusals[exc.reason] += 1
        who = f" claiming to be from {claimed!r}" if claimed else ""
        logger.warning("%s refused a message%s (%s): %s", self.name, who, exc.reason, exc)

    def forget(self, message_id: str) -> None:
        """Let a message id be admitted again (its handling failed, and it may be
        delivered again)."""
        self.seen.forget(message_id)


def _senders(senders: Mapping[str, Collection[str]] | None) -> dict[str, frozenset[str]]:
    """``senders`` checked and frozen; a ConfigurationException naming a
    message type that does not exist, or a type no key may send."""
    if senders is None:
        return {}
    if not isinstance(senders, Mapping):
        raise ConfigurationException(
            "senders must map message types to the key ids allowed to send them, e.g. "
            "{'global_update': {'server'}}"
        )
    frozen: dict[str, frozenset[str]] = {}
    for msg_type, ids in senders.items():
        if msg_type not in BODY_TYPES:
            raise ConfigurationException(
                f"senders names {msg_type!r}, not a message type: use one of "
                f"{', '.join(sorted(BODY_TYPES))}"
            )
        if isinstance(ids, str):
            ids = [ids]  # one id, not its characters
        allowed = frozenset(ids)
        if not allowed or not all(isinstance(i, str) and i for i in allowed):
            raise ConfigurationException(
                f"senders[{msg_type!r}] must name at least one key id (non-empty strings), "
                f"got {sorted(map(repr, allowed))}"
            )
        frozen[msg_type] = allowed
    return frozen


def _size(payload: Any) -> int:
    try:
        return len(payload)
    except TypeError:
        return 0
