"""Enum values by name, and what clients announce they can decode
(``Capabilities``): :func:`supported_lossy` and :func:`pick_lossy`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import EnumDescriptor

from flwire.exceptions import SerializationException
from flwire.tensors import codecs
from flwire.tensors.lossy import METHOD_NAMES, METHODS, LossyConfig
from flwire.v1 import messages_pb2 as pb
from flwire.v1 import tensor_pb2


def enum_prefix(enum: EnumDescriptor) -> str:
    """The prefix every value name of an enum shares (``CLIENT_STATUS_``)."""
    first, *rest = [v.name.split("_") for v in enum.values]
    words = 0
    while words < len(first) - 1 and all(r[: words + 1] == first[: words + 1] for r in rest):
        words += 1
    return "".join(w + "_" for w in first[:words])


def enum_value(enum: EnumDescriptor, item: Any, path: str) -> int:
    """An enum value from its number, its name, or its short name in any case
    (``"training"`` for ``CLIENT_STATUS_TRAINING``)."""
    if isinstance(item, int) and not isinstance(item, bool):
        return item
    name = str(item).upper()
    prefix = enum_prefix(enum)
    value = enum.values_by_name.get(name if name.startswith(prefix) else prefix + name)
    if value is None:
        known = ", ".join(v.name.removeprefix(prefix).lower() for v in enum.values if v.number)
        raise SerializationException(f"{path}: unknown value {item!r} (known: {known})")
    return int(value.number)


def enum_short_name(enum: EnumDescriptor, number: int) -> str | int:
    """An enum value's name without its prefix, lower case (``training``); the
    number itself for a value this schema does not know (a newer minor version's),
    which :func:`enum_value` takes back unchanged."""
    value = enum.values_by_number.get(number)
    return value.name.removeprefix(enum_prefix(enum)).lower() if value else int(number)


def lossy_values(items: Iterable[str | int]) -> list[int]:
    """``flwire.v1.Lossy`` values from short method names (``int8``), enum names or values."""
    out = []
    for item in items:
        if isinstance(item, str) and item.lower() in METHODS:
            out.append(METHODS[item.lower()])
        else:
            out.append(enum_value(tensor_pb2.Lossy.DESCRIPTOR, item, "supported_lossy"))
    return out


def _capabilities(registration: Any) -> pb.Capabilities:
    registration = getattr(registration, "body", registration)
    caps = getattr(registration, "capabilities", registration)
    if not isinstance(caps, pb.Capabilities):
        raise SerializationException(
            f"expected a client registration or its capabilities, got {type(caps).__name__}"
        )
    return caps


def supported_codecs(registration: Any) -> list[str]:
    """Names of the frame codecs (``zstd``, ``lz4``) a client announced that this
    flwire has; ``registration`` as for :func:`supported_lossy`."""
    found = (codecs.by_wire(v) for v in _capabilities(registration).supported_codecs)
    return [codec.name for codec in found if codec is not None]


def pick_codec(registrations: Iterable[Any], preferred: Iterable[str] = ("zstd", "lz4")) -> str:
    """The first of ``preferred`` codec names that every client in
    ``registrations`` decodes, for ``EncodeOptions(compression=...)``; ``"none"``
    (uncompressed, which every reader decodes) when there is none."""
    regs = list(registrations)
    common = set(codecs.names())
    for reg in regs:
        common &= set(supported_codecs(reg))
    return next((name for name in preferred if name in common), codecs.NONE)


def supported_lossy(registration: Any) -> list[str]:
    """Short names (``float16``, ``bfloat16``, ``int8``, ``topk``) of the lossy
    encodings a client announced; ``registration`` is a decoded
    client_registration Message, a ClientRegistration or a Capabilities.
    Values this flwire does not know are left out."""
    caps = _capabilities(registration)
    return [METHOD_NAMES[v] for v in caps.supported_lossy if v in METHOD_NAMES]


def pick_lossy(
    registrations: Iterable[Any], preferred: Iterable[str | LossyConfig]
) -> LossyConfig | None:
    """The first of ``preferred`` (short method names or LossyConfigs, best
    first) that every client in ``registrations`` supports, as a LossyConfig;
    None when there is none, i.e. send losslessly. ``registrations`` are what
    :func:`supported_lossy` takes (one client: pass a one-element list)."""
    regs = list(registrations)
    if not regs:
        return None
    common = set(METHODS)
    for reg in regs:
        common &= set(supported_lossy(reg))
    for choice in preferred:
        config = choice if isinstance(choice, LossyConfig) else LossyConfig(choice)  # type: ignore[arg-type]
        if config.method in common:
            return config
    return None
