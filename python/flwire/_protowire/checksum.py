"""CRC-32C (Castagnoli), the checksum of tensors and of split payloads."""

from __future__ import annotations

from typing import Any

import crc32c as _crc32c


def crc32c(data: Any) -> int:
    """CRC-32C of a bytes-like object (releases the GIL for large inputs)."""
    return int(_crc32c.crc32c(data))
