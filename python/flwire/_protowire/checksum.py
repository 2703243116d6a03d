"""CRC-32C (Castagnoli), the checksum of tensors and of split payloads."""

from __future__ import annotations

from typing import Any

import crc32c as _crc32c


def crc32c(data: Any, value: int = 0) -> int:
    """CRC-32C of a bytes-like object (releases the GIL for large inputs); ``value``,
    the CRC-32C of the bytes before it, continues a running checksum."""
    return int(_crc32c.crc32c(data, value))
