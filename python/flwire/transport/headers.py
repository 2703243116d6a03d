"""Kafka headers for flwire messages: what a router needs, without parsing the body.

The binding is a plain value (a list of ``(name, bytes)`` pairs), independent
of any Kafka client library.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwire.messages import Message

TYPE = "flwire-type"
SCHEMA_VERSION = "flwire-schema-version"
SENDER_ID = "flwire-sender-id"
MESSAGE_ID = "flwire-message-id"

Headers = list[tuple[str, bytes]]


def message_headers(msg: Message) -> Headers:
    """Headers naming the message's type, schema version, sender and id."""
    return [
        (TYPE, msg.type.encode()),
        (SCHEMA_VERSION, msg.schema_version.encode()),
        (SENDER_ID, msg.sender_id.encode()),
        (MESSAGE_ID, msg.message_id.encode()),
    ]


def read_headers(headers: Iterable[tuple[str, bytes | str | None]] | None) -> dict[str, str]:
    """The flwire headers as a dict of str (other headers ignored; last one wins)."""
    out: dict[str, str] = {}
    for name, value in headers or ():
        if name.startswith("flwire-") and value is not None:
            out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out
