"""The public decode paths an input is fed to, by kind, and the contract they
are held to: each call returns valid data or raises the SDK's own exception
(:class:`~flwire.exceptions.FLException`); anything else is a :class:`Finding`.

Beyond "no foreign exception" the targets check what must hold when decoding
succeeds: decoded tensors have the names and shapes ``read_tensor_map``
announced, the decoders agree on whether a map is valid, an accepted message
re-encodes to bytes that decode to the same message, ``flwire inspect`` never
raises, and a Reassembler hands every part's token back exactly once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from flwire import messages
from flwire.compat.serialization.message_serializer import MessageSerializer
from flwire.compat.serialization.weight_serializer import WeightSerializer
from flwire.exceptions import FLException
from flwire.inspect_cmd import inspect_bytes
from flwire.tensors import TensorMapView, decode_tensor_map, read_tensor_map
from flwire.transport import FlwireDeserializer
from flwire.transport.chunking import Completed, Dropped, Reassembler, parse_part

T = TypeVar("T")


class Finding(Exception):
    """A decode path broke the contract; ``step`` names the call."""

    def __init__(self, step: str, problem: str) -> None:
        super().__init__(f"{step}: {problem}")
        self.step = step


class Stats:
    """How often each step accepted or refused its input (a fuzzer whose inputs
    are all refused at the first byte tests little: the summary shows it)."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def note(self, step: str, accepted: bool) -> None:
        pair = self.counts.setdefault(step, [0, 0])
        pair[0 if accepted else 1] += 1


def attempt(stats: Stats, step: str, call: Callable[[], T]) -> T | None:
    """``call()``, or None when it raised an FLException; any other exception
    becomes a Finding (chained, so its traceback is kept)."""
    try:
        result = call()
    except FLException:
        stats.note(step, False)
        return None
    except Exception as exc:
        raise Finding(step, f"raised {type(exc).__name__}: {exc}") from exc
    stats.note(step, True)
    return result


def _inspect(stats: Stats, step: str, data: bytes) -> None:
    """``flwire inspect`` prints a description or a one-line reason: never raises."""
    try:
        code = inspect_bytes(data, io.StringIO(), io.StringIO())
    except Exception as exc:
        raise Finding(step, f"raised {type(exc).__name__}: {exc}") from exc
    stats.note(step, code == 0)


def _check_decoded(step: str, view: TensorMapView | None, decoded: dict[str, Any] | None) -> None:
    if decoded is None:
        return
    if view is None:
        raise Finding(step, "decoded a map that read_tensor_map refused")
    shapes: dict[str, tuple[int, ...]] = {}
    for rec in view.records:
        shapes[rec.name] = rec.shape
    if set(decoded) != set(shapes):
        raise Finding(step, f"decoded names {sorted(decoded)} != read names {sorted(shapes)}")
    for name, value in decoded.items():
        if tuple(value.shape) != shapes[name]:
            raise Finding(step, f"{name!r} decoded as {tuple(value.shape)}, read as {shapes[name]}")


def tensor_map(records: list[bytes], expect: dict[str, Any] | None, stats: Stats) -> None:
    data = records[0]
    view = attempt(stats, "read_tensor_map", lambda: read_tensor_map(data))
    arrays = attempt(
        stats, "decode_tensor_map(numpy)", lambda: decode_tensor_map(data, as_numpy=True)
    )
    _check_decoded("decode_tensor_map(numpy)", view, arrays)
    del arrays
    # A writable buffer: the zero-copy path for tensors stored uncompressed.
    tensors = attempt(stats, "decode_tensor_map(torch)", lambda: decode_tensor_map(bytearray(data)))
    _check_decoded("decode_tensor_map(torch)", view, tensors)
    del tensors
    if view is not None:
        attempt(stats, "TensorMapView.verify", view.verify)
    if expect is not None:
        got = attempt(
            stats,
            "WeightSerializer.deserialize_weights(expect=)",
            lambda: WeightSerializer.deserialize_weights(data, expect=expect),
        )
        _check_decoded("WeightSerializer.deserialize_weights(expect=)", view, got)
    _inspect(stats, "inspect_bytes", data)


def _same_message(a: messages.Message, b: messages.Message) -> bool:
    """Same envelope (but for the alignment padding, which the writer chooses
    afresh) and the same weight bytes."""
    ea, eb = type(a.envelope)(), type(b.envelope)()
    ea.CopyFrom(a.envelope)
    eb.CopyFrom(b.envelope)
    ea.ClearField("padding")
    eb.ClearField("padding")
    weights_a, weights_b = a.weights, b.weights
    if weights_a is None or weights_b is None:
        return ea == eb and weights_a is None and weights_b is None
    return ea == eb and bytes(weights_a) == bytes(weights_b)


def _message(stats: Stats, data: Any, expect: dict[str, Any] | None, prefix: str = "") -> None:
    """decode_message and everything an accepted message offers."""
    msg = attempt(stats, f"{prefix}decode_message", lambda: messages.decode_message(data))
    if msg is None:
        return
    step = f"{prefix}Message"
    attempt(stats, step, lambda: (msg.type, msg.body, msg.timestamp, msg.schema_version))
    wire = attempt(stats, f"{prefix}Message.to_bytes", msg.to_bytes)
    if wire is not None:
        again = attempt(
            stats, f"{prefix}decode_message(to_bytes())", lambda: messages.decode_message(wire)
        )
        if again is None:
            raise Finding(
                f"{prefix}decode_message(to_bytes())",
                "an accepted message re-encodes to bytes it refuses",
            )
        if not _same_message(msg, again):
            raise Finding(f"{prefix}decode_message(to_bytes())", "re-encoding changed the message")
    if msg.has_weights:
        view = attempt(stats, f"{prefix}Message.weights_info", msg.weights_info)
        arrays = attempt(
            stats, f"{prefix}Message.tensors(numpy)", lambda: msg.tensors(as_numpy=True)
        )
        _check_decoded(f"{prefix}Message.tensors(numpy)", view, arrays)
        del arrays
        if expect is not None:
            got = attempt(
                stats, f"{prefix}Message.tensors(expect=)", lambda: msg.tensors(expect=expect)
            )
            _check_decoded(f"{prefix}Message.tensors(expect=)", view, got)


def envelope(records: list[bytes], expect: dict[str, Any] | None, stats: Stats) -> None:
    data = records[0]
    _message(stats, data, expect)
    attempt(
        stats, "decode_message(check=False)", lambda: messages.decode_message(data, check=False)
    )
    legacy = attempt(
        stats,
        "MessageSerializer.deserialize_message",
        lambda: MessageSerializer.deserialize_message(data),
    )
    weights = (legacy or {}).get("payload", {}).get("weights")
    if weights is not None:
        attempt(
            stats,
            "WeightSerializer.deserialize_weights",
            lambda: WeightSerializer.deserialize_weights(weights, expect=expect),
        )
    attempt(stats, "FlwireDeserializer", lambda: FlwireDeserializer()(data))
    _inspect(stats, "inspect_bytes", data)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


#: The fuzzed Reassembler's max_memory_bytes: most parts of a transfer go to disk.
SPILL_AFTER = 4096


def transfer(records: list[bytes], expect: dict[str, Any] | None, stats: Stats) -> None:
    """Parts fed to parse_part and one Reassembler (small caps, parts past 4 KiB
    held on disk, a fake clock that moves a second per record); completed payloads
    decoded as messages."""
    clock = _Clock()
    r = Reassembler(
        max_pending_bytes=1 << 20,
        max_pending_transfers=4,
        part_timeout=5.0,
        clock=clock,
        max_memory_bytes=SPILL_AFTER,
    )
    held: set[int] = set()  # tokens the reassembler took
    returned: list[int] = []

    def settle(done: Completed | None, dropped: list[Dropped]) -> None:
        for item in [done, *dropped]:
            if item is not None:
                returned.extend(item.tokens)

    for token, raw in enumerate(records):
        clock.now += 1.0
        part = attempt(stats, "parse_part", partial(parse_part, raw))
        if token % 4 == 0:
            _inspect(stats, "inspect_bytes(part)", raw)
        if part is None:
            continue
        result = attempt(stats, "Reassembler.add", partial(r.add, part, token))
        if result is None:
            continue
        held.add(token)
        settle(*result)
        if r.pending_bytes < 0 or r.pending_transfers > r.max_pending_transfers:
            raise Finding(
                "Reassembler.add",
                f"pending {r.pending_bytes} bytes, {r.pending_transfers} transfers",
            )
        if not 0 <= r.memory_bytes <= SPILL_AFTER or r.spilled_bytes < 0:
            raise Finding(
                "Reassembler.add",
                f"{r.memory_bytes} bytes in memory (cap {SPILL_AFTER}), {r.spilled_bytes} spilled",
            )
        done = result[0]
        if done is not None:
            _message(stats, done.payload, None, prefix="reassembled ")
        if token % 3 == 2:
            settle(None, attempt(stats, "Reassembler.expire", r.expire) or [])
    clock.now += 1000.0
    settle(None, attempt(stats, "Reassembler.expire", r.expire) or [])
    if r.pending_transfers or r.pending_bytes or r.memory_bytes or r.spilled_bytes:
        raise Finding(
            "Reassembler.expire",
            f"{r.pending_transfers} transfers ({r.pending_bytes} bytes, {r.memory_bytes} in "
            f"memory, {r.spilled_bytes} spilled) outlive their timeout",
        )
    r.close()
    if sorted(returned) != sorted(held):
        raise Finding(
            "Reassembler tokens",
            f"tokens taken {sorted(held)}, handed back {sorted(returned)} (each exactly once)",
        )


TARGETS: dict[str, Callable[[list[bytes], dict[str, Any] | None, Stats], None]] = {
    "tensor_map": tensor_map,
    "envelope": envelope,
    "transfer": transfer,
}
