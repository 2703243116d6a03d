"""`flwire inspect`: a readable summary of any flwire message, tensor map or transfer part."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import TextIO

from google.protobuf import text_format

from flwire import messages as m
from flwire.exceptions import CommunicationException, SerializationException
from flwire.messages import value_map_to_dict
from flwire.tensors import TensorMapView, read_tensor_map
from flwire.transport.chunking import parse_part
from flwire.v1 import messages_pb2


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _enum_name(name: str, prefix: str) -> str:
    """``CODEC_ZSTD`` -> ``zstd``; the unspecified value (raw bytes) -> ``none``."""
    short = name.removeprefix(prefix).lower()
    return "none" if short == "unspecified" else short


def describe_tensor_map(view: TensorMapView, out: TextIO, indent: str = "") -> bool:
    """Print one line per tensor; decode each to verify its checksum. Return all-OK."""
    ok = True
    print(
        f"{indent}{len(view.records)} tensors, "
        f"{_fmt_bytes(sum(r.decoded_size for r in view.records))} decoded, "
        f"{_fmt_bytes(sum(len(r.data) for r in view.records))} on the wire",
        file=out,
    )
    width = max([4, *(len(r.name) for r in view.records)])
    print(
        f"{indent}  {'name':<{width}}  {'dtype':<14} {'shape':<20} {'codec':<7} {'filter':<13}"
        f"{'lossy':<12}{'logical':>12} {'payload':>12} -> {'wire':>12}  check",
        file=out,
    )
    for rec in view.records:
        single = TensorMapView([rec])
        try:
            single.verify()
            check = f"crc32c={rec.crc32c:08x} crc ok"
        except SerializationException as exc:
            check, ok = f"BAD: {exc}", False
        print(
            f"{indent}  {rec.name:<{width}}  {rec.dtype.name:<14} {list(rec.shape)!s:<20} "
            f"{_enum_name(rec.codec_name, 'CODEC_'):<7} "
            f"{_enum_name(rec.filter_name, 'FILTER_'):<13}"
            f"{(rec.lossy.describe() if rec.lossy else 'lossless'):<12}"
            f"{_fmt_bytes(rec.decoded_size):>12} {_fmt_bytes(rec.raw_size):>12} -> "
            f"{_fmt_bytes(len(rec.data)):>12}  {check}",
            file=out,
        )
    if view.metadata:
        print(f"{indent}metadata: {view.metadata}", file=out)
    return ok


def _legacy_json(data: bytes | bytearray | memoryview) -> str | None:
    """The type of an old ``common`` JSON message (``{"type": ..., "payload": ...}``),
    or None when ``data`` is not one."""
    # 0x7B ("{") would open a protobuf group of field 15: no flwire message starts so.
    if not bytes(data[:64]).lstrip().startswith(b"{"):
        return None
    try:
        obj = json.loads(bytes(data))
    except ValueError:
        return None
    if isinstance(obj, dict) and "type" in obj and "payload" in obj:
        return str(obj["type"])
    return None


def inspect_bytes(
    data: bytes | bytearray | memoryview, out: TextIO, err: TextIO | None = None
) -> int:
    """Describe ``data`` on ``out``; return 0 if it decodes cleanly, 1 otherwise
    (with a one-line reason on ``err``, standard error by default)."""
    err = sys.stderr if err is None else err
    if not data:
        print("flwire inspect: empty input (0 bytes): nothing to describe", file=err)
        return 1
    legacy = _legacy_json(data)
    if legacy is not None:
        print(
            f"flwire inspect: this is a message of the old common package (JSON, type "
            f"{legacy!r}), not flwire's wire format; old and new messages cannot be mixed on "
            "one topic: send it again with flwire (flwire.compat.serialization "
            "MessageSerializer writes the new form)",
            file=err,
        )
        return 1
    try:
        msg = m.decode_message(data)
    except SerializationException as message_error:
        try:
            view = read_tensor_map(data)
        except SerializationException as map_error:
            try:
                part = parse_part(data)
            except (SerializationException, CommunicationException):
                print(
                    f"flwire inspect: not a flwire message ({message_error}) "
                    f"nor a tensor map ({map_error}) nor a transfer part",
                    file=err,
                )
                return 1
            print(
                f"flwire.v1.TransferPart, {_fmt_bytes(len(data))}: part {part.index + 1} of "
                f"{part.count} of transfer {part.transfer_id}",
                file=out,
            )
            print(
                f"  bytes {part.offset:,}-{part.offset + len(part.data):,} of "
                f"{_fmt_bytes(part.total_size)}; payload crc32c {part.crc:08x} (checked when "
                "every part is in: Channel.receive reassembles them)",
                file=out,
            )
            return 0
        print(f"flwire.v1.TensorMap, {_fmt_bytes(len(data))}", file=out)
        return 0 if describe_tensor_map(view, out) else 1
    when = datetime.fromtimestamp(msg.timestamp, tz=timezone.utc).isoformat()
    kind = f"custom ({msg.body.type})" if msg.type == "custom" else msg.type
    print(f"flwire.v1.Envelope, {_fmt_bytes(len(data))}: {kind}", file=out)
    print(f"  message id  {msg.message_id}", file=out)
    print(f"  sender      {msg.sender_id or '(none)'}", file=out)
    print(f"  time        {when}", file=out)
    print(f"  schema      {msg.schema_version}", file=out)
    if msg.envelope.HasField("signature"):
        sig = msg.envelope.signature
        algorithm = _enum_name(
            messages_pb2.SignatureAlgorithm.Name(sig.algorithm)
            if sig.algorithm in messages_pb2.SignatureAlgorithm.values()
            else str(sig.algorithm),
            "SIGNATURE_ALGORITHM_",
        )
        print(
            f"  signature   key {sig.key_id!r}, {algorithm}, {len(sig.signature)} B "
            "(not verified: inspect holds no trust store)",
            file=out,
        )
    if msg.envelope.extensions:
        print(f"  extensions  {value_map_to_dict(msg.envelope.extensions)}", file=out)
    body = msg.body
    metrics = None
    if "metrics" in body.DESCRIPTOR.fields_by_name and len(body.metrics):
        metrics = dict(sorted(value_map_to_dict(body.metrics).items()))
        body = type(body)()
        body.CopyFrom(msg.body)
        body.ClearField("metrics")
    body_text = text_format.MessageToString(body, as_one_line=True)
    if body_text:
        print(f"  body        {body_text}", file=out)
    if metrics is not None:
        print(f"  metrics     {metrics}", file=out)
    if msg.has_weights:
        print("  weights:", file=out)
        try:
            view = msg.weights_info()
        except SerializationException as exc:
            print(f"    BAD: {exc}", file=out)
            return 1
        return 0 if describe_tensor_map(view, out, "    ") else 1
    return 0
