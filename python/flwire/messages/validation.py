"""Checks a message against the rules its schema declares (options.proto):
the Envelope's required fields, the schema's major version, and each body's
field rules. Every broken rule is reported, as a :class:`Violation`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwire.exceptions import MessageValidationError, Violation
from flwire.messages.schema import BODY_TYPES, CUSTOM, ENVELOPE_RULES

if TYPE_CHECKING:
    from flwire.messages.message import Message

#: The range of ``google.protobuf.Timestamp``: 0001-01-01T00:00:00Z to
#: 9999-12-31T23:59:59.999999999Z, in seconds since the epoch.
TIMESTAMP_MIN_S = -62_135_596_800
TIMESTAMP_MAX_S = 253_402_300_799

#: Longest ``message_id`` and ``sender_id``, in UTF-8 bytes: receivers remember
#: message ids (de-duplication), so their size must be bounded.
MAX_ID_BYTES = 128

#: The schema version this flwire writes; it reads any minor version of SCHEMA_MAJOR.
SCHEMA_MAJOR = 1
SCHEMA_MINOR = 2


def violations(msg: Message) -> list[Violation]:
    """Every rule ``msg`` breaks (empty when it is valid)."""
    env = msg.envelope
    found = [
        Violation(f"envelope.{r.field}", r.rule, r.describe(env))
        for r in ENVELOPE_RULES
        if not r.holds(env, msg.has_weights)
    ]
    if env.HasField("schema_version") and env.schema_version.major != SCHEMA_MAJOR:
        major, minor = env.schema_version.major, env.schema_version.minor
        found.append(
            Violation(
                "envelope.schema_version",
                "schema_major",
                f"is {major}.{minor}; this flwire reads major version {SCHEMA_MAJOR} only "
                f"(upgrade flwire to read version {major} messages)",
            )
        )
    for name in ("message_id", "sender_id"):
        size = len(getattr(env, name).encode("utf-8"))
        if size > MAX_ID_BYTES:
            found.append(
                Violation(
                    f"envelope.{name}",
                    "max_length",
                    f"is {size} bytes long; at most {MAX_ID_BYTES}",
                )
            )
    ts = env.timestamp
    if not (TIMESTAMP_MIN_S <= ts.seconds <= TIMESTAMP_MAX_S and 0 <= ts.nanos < 1_000_000_000):
        found.append(
            Violation(
                "envelope.timestamp",
                "timestamp_range",
                f"is {ts.seconds} s + {ts.nanos} ns, outside google.protobuf.Timestamp's "
                "range (years 1 to 9999, nanos 0 to 999,999,999)",
            )
        )
    kind = msg.type
    if not kind:
        found.append(Violation("envelope.body", "required", "is missing: the message has no body"))
        return found
    body = msg.body
    found += [
        Violation(f"{kind}.{r.field}", r.rule, r.describe(body))
        for r in BODY_TYPES[kind].rules
        if not r.holds(body, msg.has_weights)
    ]
    fields = BODY_TYPES[kind].descriptor.fields_by_name
    found += [
        Violation(
            f"envelope.extensions[{key!r}]",
            "shadows_field",
            f"has the name of a {kind} field: an extension may not stand in for one"
            if key in fields
            else "is 'weights', the payload key of a message's tensors: reserved",
        )
        for key in sorted(env.extensions)
        if key in fields or key == "weights"
    ]
    if kind == CUSTOM and body.type in BODY_TYPES and body.type != CUSTOM:
        found.append(
            Violation(
                f"{kind}.type",
                "not_schema_type",
                f"is {body.type!r}, a type the schema declares; send it as that type",
            )
        )
    return found


def describe(found: list[Violation]) -> str:
    """One line naming every violation."""
    what = "; ".join(str(v) for v in found)
    return f"invalid message ({len(found)} rule{'s' if len(found) > 1 else ''} broken): {what}"


def validate(msg: Message) -> None:
    """Raise :class:`MessageValidationError` (with ``violations``) unless ``msg`` is valid."""
    found = violations(msg)
    if found:
        raise MessageValidationError(describe(found), tuple(found))
