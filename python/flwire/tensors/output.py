"""The tensor codec's output buffer: a ``bytes`` object filled in place.

``bytes(capacity)`` comes from calloc, so its pages are not touched until they
are written. ``io.BytesIO`` takes it over without a copy (nothing else holds a
reference), its buffer is written through ``getbuffer()`` and ``getvalue()``
hands the same object back, shrunk to what was written. Large pieces are
copied by numpy, which releases the GIL, so that a worker thread copying a
frame does not stall the others (CPython's BytesIO.write holds the GIL).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from flwire.exceptions import SerializationException

# Below this, a memoryview slice assignment is cheaper than numpy's call overhead.
_NUMPY_COPY_BYTES = 1 << 14


class FilledBytes:
    """Write pieces one after another into at most ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self._io = io.BytesIO(bytes(capacity))
        self._view = self._io.getbuffer()
        self._array = np.frombuffer(self._view, dtype=np.uint8)
        self.size = 0

    def write(self, piece: Any) -> None:
        n = piece.nbytes if isinstance(piece, np.ndarray) else len(piece)
        end = self.size + n
        if end > len(self._array):
            raise SerializationException(
                f"internal error: the encoded TensorMap outgrew its estimated size "
                f"{len(self._array)} (please report this with the state dict's shapes)"
            )
        if n >= _NUMPY_COPY_BYTES:
            src = piece if isinstance(piece, np.ndarray) else np.frombuffer(piece, np.uint8)
            self._array[self.size : end] = src
        elif n:
            self._view[self.size : end] = piece
        self.size = end

    def getvalue(self) -> bytes:
        """The bytes written; the object can no longer be written to."""
        del self._array
        self._view.release()
        self._io.truncate(self.size)
        return self._io.getvalue()
