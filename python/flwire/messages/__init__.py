"""Typed FL messages: build them, encode, decode, validate, dispatch.

    msg = messages.client_update("client-1", round_id=3, weights=state,
                                 metrics={"loss": 0.21}, num_examples=600)
    blob = msg.to_bytes()                       # a flwire.v1.Envelope
    got = messages.decode_message(blob)         # ids and metrics parsed; weights untouched
    state = got.tensors()                       # weights decoded only now

Each message type's rules (required fields, non-negative counts, its topic
and sender) are declared once in proto/flwire/v1/messages.proto and read from
the descriptors (:mod:`.schema`).
"""

from flwire.exceptions import (
    HandlerError,
    InvalidMessageError,
    MessageDecodeError,
    MessageValidationError,
    Violation,
)
from flwire.messages.builders import (
    BUILDERS,
    SERVER_ID,
    Weights,
    build,
    client_registration,
    client_update,
    custom,
    evaluation_request,
    evaluation_result,
    global_update,
    heartbeat,
    partial_aggregate,
    shutdown,
    training_start,
)
from flwire.messages.capabilities import (
    pick_codec,
    pick_lossy,
    supported_codecs,
    supported_lossy,
)
from flwire.messages.dedupe import SeenIds
from flwire.messages.dispatch import Dispatcher
from flwire.messages.message import Message, decode_message
from flwire.messages.schema import BODY_TYPES, BodyType, body_type
from flwire.messages.validation import SCHEMA_MAJOR, SCHEMA_MINOR, validate, violations
from flwire.messages.values import PyValue, from_value, to_value, value_map_to_dict

#: Every message type, by its Envelope body field name.
MESSAGE_TYPES: tuple[str, ...] = tuple(BODY_TYPES)

__all__ = [
    "BODY_TYPES",
    "BUILDERS",
    "MESSAGE_TYPES",
    "SCHEMA_MAJOR",
    "SCHEMA_MINOR",
    "SERVER_ID",
    "BodyType",
    "Dispatcher",
    "HandlerError",
    "InvalidMessageError",
    "Message",
    "MessageDecodeError",
    "MessageValidationError",
    "PyValue",
    "SeenIds",
    "Violation",
    "Weights",
    "body_type",
    "build",
    "client_registration",
    "client_update",
    "custom",
    "decode_message",
    "evaluation_request",
    "evaluation_result",
    "from_value",
    "global_update",
    "heartbeat",
    "partial_aggregate",
    "pick_codec",
    "pick_lossy",
    "shutdown",
    "supported_codecs",
    "supported_lossy",
    "to_value",
    "training_start",
    "validate",
    "value_map_to_dict",
    "violations",
]
