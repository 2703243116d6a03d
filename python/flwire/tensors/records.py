"""The tensor codec's shared vocabulary: size constants (``GIB``,
``MAX_MESSAGE_BYTES``), the caps a decoder checks before it allocates
(``DecodeLimits``), and ``TensorRecord``, one tensor as it sits on the wire.
Importing it refuses a big-endian host, so neither the encoder nor the decoder
can run on one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from flwire.tensors import dtypes
from flwire.tensors import schema as s
from flwire.tensors.codecs import Frame
from flwire.tensors.lossy import LossyParams

if sys.byteorder != "little":  # pragma: no cover - no big-endian CI machine
    raise ImportError("flwire's tensor codec needs a little-endian host")

TensorLike = Any  # torch.Tensor or numpy.ndarray

GIB = 1 << 30
#: Stock protobuf parsers refuse messages of 2 GiB and more.
MAX_MESSAGE_BYTES = 2 * GIB


@dataclass(frozen=True)
class DecodeLimits:
    """Caps a decoder checks before it allocates (defaults: 4 GiB)."""

    max_tensor_bytes: int = 4 * GIB
    max_total_bytes: int = 4 * GIB
    max_tensors: int = 1_000_000
    max_rank: int = 64


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as it sits on the wire; ``data`` is a view on the input buffer."""

    name: str
    dtype: dtypes.DtypeInfo
    shape: tuple[int, ...]
    codec: int
    filter: int
    raw_size: int
    crc32c: int
    data: memoryview
    #: The frames of ``data`` (compressed tensors only), checked against raw_size.
    frames: tuple[Frame, ...] = ()
    #: Set for a lossy-encoded tensor (``Tensor.lossy``): ``dtype`` and ``shape``
    #: are then the logical tensor's, and ``raw_size``/``crc32c`` the payload's.
    lossy: LossyParams | None = None

    @property
    def numel(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count

    @property
    def decoded_size(self) -> int:
        """Bytes of the decoded tensor (``raw_size`` unless lossy)."""
        return self.numel * self.dtype.itemsize

    @property
    def lossy_name(self) -> str:
        """``float16``, ``bfloat16``, ``int8``, ``topk``, or ``""`` when lossless."""
        return self.lossy.name if self.lossy else ""

    @property
    def codec_name(self) -> str:
        return s.CODEC_NAMES.get(self.codec, str(self.codec))

    @property
    def filter_name(self) -> str:
        return s.FILTER_NAMES.get(self.filter, str(self.filter))
