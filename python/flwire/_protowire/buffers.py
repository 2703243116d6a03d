"""Bytes-like inputs and UTF-8 text, checked the way protobuf checks them."""

from __future__ import annotations

from typing import Any

from flwire.exceptions import SerializationException


def byte_view(data: Any, what: str = "input") -> memoryview:
    """``data`` (any bytes-like object) as a flat memoryview of unsigned bytes,
    without copying when it is contiguous. Raises SerializationException for
    str and for objects that are not bytes-like."""
    if isinstance(data, str):
        raise SerializationException(
            f"{what}: expected bytes, got str (flwire messages and tensor maps are binary "
            "protobuf, not the old JSON/base64 text)"
        )
    try:
        view = memoryview(data)
    except TypeError:
        raise SerializationException(
            f"{what}: expected a bytes-like object, got {type(data).__name__}"
        ) from None
    if view.nbytes == 0:
        return memoryview(b"")
    if not view.c_contiguous:
        view = memoryview(view.tobytes())  # e.g. a strided numpy slice: one copy
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


def utf8(text: str, what: str) -> bytes:
    """``text`` encoded as UTF-8; SerializationException for unencodable text
    (lone surrogates), which protobuf strings cannot hold."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationException(f"{what} is not valid Unicode text: {exc.reason}") from None


def decode_utf8(buf: memoryview, start: int, end: int, what: str) -> str:
    """Decode a string field, refusing invalid UTF-8 as protobuf does."""
    try:
        return str(buf[start:end], "utf-8")
    except UnicodeDecodeError as exc:
        raise SerializationException(f"{what} is not valid UTF-8: {exc.reason}") from None
