"""One FL message: its Envelope, with the weights kept apart as TensorMap bytes.

    got = decode_message(blob)          # ids and metrics parsed; weights untouched
    got.type, got.body.round_id         # "client_update", 3
    state = got.tensors()               # the weights, decoded on request

A decoded message keeps its weights as a view on the received buffer until
:meth:`Message.tensors` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flwire.exceptions import InvalidMessageError, MessageDecodeError, SerializationException
from flwire.messages import envelope as _envelope
from flwire.messages.validation import describe, violations
from flwire.tensors import EncodeOptions, TensorMapView, decode_tensor_map, read_tensor_map
from flwire.tensors.decode import tensors_from_raw
from flwire.tensors.encode import encode_sources
from flwire.tensors.sources import Source
from flwire.v1 import messages_pb2 as pb


@dataclass
class Message:
    """One FL message: the envelope (body's weights field empty) plus the
    TensorMap bytes of its weights, kept apart so they are never copied twice."""

    envelope: pb.Envelope
    _weights: list[Any] | None = field(default=None, repr=False)
    #: Weights not (or no longer) encoded: a state dict to stream (``stream=True``
    #: options, with ``_options``), or a received stream's decoded tensors
    #: (``_received``). ``weights`` encodes them on request.
    _sources: list[Source] | None = field(default=None, repr=False)
    _options: EncodeOptions | None = field(default=None, repr=False)
    _received: bool = field(default=False, repr=False)
    #: Makes the signer of a streamed message's seal (set by signing it).
    _seal_signer: Callable[[], Any] | None = field(default=None, repr=False)

    @classmethod
    def with_sources(
        cls, envelope: pb.Envelope, sources: list[Source], options: EncodeOptions | None = None
    ) -> Message:
        """A message whose weights are ``sources`` to stream (``options``: how)."""
        return cls(envelope, None, sources, options or EncodeOptions(), False)

    @classmethod
    def received(cls, envelope: pb.Envelope, sources: list[Source]) -> Message:
        """A message of a streamed transfer, its weights decoded (and handed over)."""
        return cls(envelope, None, sources, None, True)

    @property
    def sources(self) -> list[Source] | None:
        """The weights as unencoded tensors (see ``_sources``), or None."""
        return self._sources

    @property
    def seal_signer(self) -> Callable[[], Any] | None:
        """What makes the signer of this streamed message's seal, or None."""
        return self._seal_signer

    def sign_stream(self, make_signer: Callable[[], Any]) -> None:
        """Have this streamed message's seal signed by what ``make_signer()``
        returns (``update(record)`` for each record, then ``finish()``)."""
        if self._seal_signer is not None:
            raise SerializationException("the message is signed already")
        self._seal_signer = make_signer

    @property
    def encode_options(self) -> EncodeOptions:
        """How the unencoded weights are to be encoded."""
        return self._options or EncodeOptions(compression="none")

    @property
    def type(self) -> str:
        """The body's field name, e.g. ``"client_update"``."""
        name = self.envelope.WhichOneof("body")
        return name or ""

    @property
    def body(self) -> Any:
        """The body message (ClientUpdate, GlobalUpdate, ...)."""
        return getattr(self.envelope, self.type)

    @property
    def message_id(self) -> str:
        return self.envelope.message_id

    @property
    def sender_id(self) -> str:
        return self.envelope.sender_id

    @property
    def timestamp(self) -> float:
        """Creation time in seconds since the epoch."""
        ts = self.envelope.timestamp
        return ts.seconds + ts.nanos / 1e9

    @property
    def schema_version(self) -> str:
        v = self.envelope.schema_version
        return f"{v.major}.{v.minor}"

    @property
    def has_weights(self) -> bool:
        return self._weights is not None or self._sources is not None

    @property
    def weights_nbytes(self) -> int:
        """Size of the weights' TensorMap bytes (0 without weights), without joining
        them (for unencoded weights: their raw bytes)."""
        if self._weights is None and self._sources is not None:
            return sum(src.raw.nbytes for src in self._sources)
        return sum(memoryview(w).nbytes for w in self._weights or ())

    def _encoded(self) -> list[Any] | None:
        if self._weights is None and self._sources is not None:
            self._weights = encode_sources(self._sources, self.encode_options)
        return self._weights

    @property
    def weights(self) -> memoryview | bytes | None:
        """The TensorMap bytes of the weights (a view where possible), or None.
        Unencoded weights (streamed) are encoded on the first call, whole: under
        2 GiB only."""
        if self._encoded() is None:
            return None
        assert self._weights is not None
        if len(self._weights) == 1:
            return memoryview(self._weights[0])
        joined = b"".join(self._weights)
        self._weights = [joined]
        return joined

    def weights_info(self) -> TensorMapView:
        """Names, dtypes, shapes and sizes of the weights, without decoding them."""
        return read_tensor_map(self._require_weights())

    def tensors(self, **decode_options: Any) -> dict[str, Any]:
        """Decode the weights (options as for :func:`decode_tensor_map`). A
        received stream's tensors were decoded as they arrived: they are handed
        out as they are (each call returns tensors over the same memory)."""
        if self._received and self._sources is not None:
            raws = [(s.name, s.dtype, s.shape, s.raw) for s in self._sources]
            return tensors_from_raw(raws, **decode_options)
        return decode_tensor_map(self._require_weights(), **decode_options)

    def to_bytes(self) -> bytes:
        """The wire form: an encoded ``flwire.v1.Envelope``."""
        return b"".join(self.buffers())

    def buffers(self) -> list[Any]:
        """The wire form as buffers whose concatenation is :meth:`to_bytes`
        (the weights are not copied)."""
        return _envelope.splice(self.envelope, self._encoded())

    def _require_weights(self) -> memoryview | bytes:
        w = self.weights
        if w is None:
            raise SerializationException(f"this {self.type or 'empty'} message carries no weights")
        return w


def decode_message(data: Any, *, check: bool = True) -> Message:
    """Parse an encoded Envelope. The weights stay a view on ``data`` (nothing
    decoded or copied) until :meth:`Message.tensors` asks for them.

    Raises :class:`MessageDecodeError` for bytes that are not a message, and
    :class:`InvalidMessageError` (a MessageDecodeError and a
    MessageValidationError, with ``violations``) for a message that breaks its
    schema's rules; ``check=False`` skips the rules."""
    if isinstance(data, str):
        raise MessageDecodeError(
            "expected bytes, got str: flwire messages are binary protobuf, not the old JSON"
        )
    if data is None:
        raise MessageDecodeError(
            "expected bytes, got None: a Delivery of a streamed transfer has no payload; "
            "its message, weights decoded, is delivery.message"
        )
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) == 0:
        raise MessageDecodeError("empty message (0 bytes): expected an encoded flwire Envelope")
    try:
        envelope, weights = _envelope.split(data)
    except SerializationException as exc:
        raise MessageDecodeError(f"not a valid flwire message: {exc}") from None
    msg = Message(envelope, None if weights is None else [weights])
    if check:
        found = violations(msg)
        if found:
            raise InvalidMessageError(describe(found), tuple(found))
    return msg
