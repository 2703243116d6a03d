"""Tensor maps in files: written atomically, read whole."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from flwire.exceptions import SerializationException


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
    """The bytes of ``filename``, in a buffer that belongs to the caller alone."""
    path = Path(filename)
    try:
        with path.open("rb") as src:
            buf = bytearray(os.fstat(src.fileno()).st_size)
            src.readinto(buf)
            return buf
    except OSError as exc:
        raise SerializationException(f"cannot read {path}: {exc.strerror}") from None
