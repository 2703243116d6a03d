"""Tensor maps in files: written atomically, read whole, and told apart from
the files other libraries write (safetensors, torch.save, numpy, gzip) by their
first bytes, so that handing one over says what it is rather than failing
somewhere in the parse. Nothing foreign is ever unpickled or unpacked."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from flwire._protowire import byte_view
from flwire.exceptions import SerializationException

#: How to turn a state dict of another library's file into a tensor map.
_ENCODE = "and encode the state dict with flwire.torch.save (or flwire.numpy.save)"
_TORCH_LOAD = f"load it with torch.load(path, weights_only=True) {_ENCODE}"


def _zip_kind(head: memoryview) -> str:
    """What a zip archive is, by the name of its first member (an ``.npz``
    holds ``.npy`` files; ``torch.save`` writes ``<name>/data.pkl`` first)."""
    if len(head) >= 30:
        name_len = struct.unpack_from("<H", head, 26)[0]
        if bytes(head[30 : 30 + name_len]).endswith(b".npy"):
            return (
                "a numpy .npz archive, not a flwire tensor map: load it with numpy.load "
                "and encode dict(archive) with flwire.numpy.save"
            )
    return f"a torch.save file (a zip archive), not a flwire tensor map: {_TORCH_LOAD}"


def _foreign_kind(head: memoryview) -> str | None:
    """What a foreign file whose first bytes are ``head`` is, and how to read
    it; None when it may be a tensor map."""
    start = bytes(head[:9])
    if len(start) == 9 and start[8:9] == b"{" and start[4:8] == bytes(4):
        header_len = struct.unpack_from("<Q", start)[0]
        if 2 <= header_len <= len(head) - 8:
            return (
                "a safetensors file, not a flwire tensor map: load it with safetensors "
                f"(safetensors.torch.load_file or safetensors.numpy.load_file) {_ENCODE}"
            )
    if start.startswith(b"PK\x03\x04"):
        return _zip_kind(head)
    if start.startswith(b"\x93NUMPY"):
        return (
            "a numpy .npy file (one array), not a flwire tensor map: load it with numpy.load "
            "and encode {'name': array} with flwire.numpy.save"
        )
    if len(start) >= 2 and start[0] == 0x80 and 2 <= start[1] <= 5:
        return (
            "a Python pickle (a legacy torch.save file?), not a flwire tensor map; flwire "
            f"never unpickles: if you trust it, {_TORCH_LOAD}"
        )
    if start.startswith(b"\x1f\x8b"):
        return (
            "gzip-compressed (the old pickle + gzip weights?), not a flwire tensor map: "
            "decompress and load it with the library that wrote it, then encode the state "
            "dict with flwire.torch.save (or flwire.numpy.save)"
        )
    return None


def refuse_foreign(data: Any, where: str = "data") -> None:
    """Raise SerializationException naming the format when ``data`` (bytes-like)
    starts as a safetensors file, a torch.save zip or pickle, a numpy .npy or
    .npz, or gzip does, and saying how to read it; a tensor map never starts
    so. Looks at the first bytes only."""
    kind = _foreign_kind(byte_view(data, where))
    if kind is not None:
        raise SerializationException(f"{where}: this is {kind}")


def write_file(data: Any, filename: str | os.PathLike[str]) -> None:
    """Write ``data`` to ``filename`` through a temporary file in the same folder,
    so that a reader never sees a half-written map."""
    path = Path(filename)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SerializationException(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise SerializationException(f"cannot write {path}: {exc.strerror}") from None


def read_file(filename: str | os.PathLike[str]) -> bytearray:
    """The bytes of ``filename``, in a buffer that belongs to the caller alone;
    SerializationException for another library's file (see :func:`refuse_foreign`)."""
    path = Path(filename)
    try:
        with path.open("rb") as src:
            buf = bytearray(os.fstat(src.fileno()).st_size)
            src.readinto(buf)
    except OSError as exc:
        raise SerializationException(f"cannot read {path}: {exc.strerror}") from None
    refuse_foreign(buf, str(path))
    return buf
