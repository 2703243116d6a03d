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

from flwire._args import require_int, require_positive, type_name
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
    """Caps a decoder checks before it allocates or decompresses anything.

    ``max_expansion`` bounds the decoded bytes of the whole map by what arrived:
    a map of ``n`` bytes may decode to at most ``max(expansion_floor_bytes,
    max_expansion * n)`` bytes, so a few bytes cannot cost gigabytes. The
    default, 100, is above every ratio measured on real updates (SimpleCNN,
    4.8 MB: dense weights under zstd 1.1, a 90 % sparse delta 4.4, a 99 %
    sparse one 9.4, top-k at 10 % 6.4 and at 1 % 59); the floor (16 MiB) lets
    small maps of zeros through (an all-zero delta of that model: 6,837). Pass
    ``max_expansion=1000`` for top-k at 0.1 % (467), or None to turn the check
    off for maps you expect to be mostly zeros (a 4 MB zero tensor: 13,981).

    ``max_tensors_per_mib`` bounds the number of tensors by what arrived, as
    each costs a fixed amount of work (about 16 microseconds in Python): a map
    of ``n`` bytes may hold at most ``max(1, n / MiB) * max_tensors_per_mib``
    tensors (and never more than ``max_tensors``), so that a map of 1 MiB is
    refused or decoded in about 100 ms at most. The default, 1,024, allows any
    map of up to 1,024 tensors, and more when they hold 1 KiB each on average
    (real models hold far more); pass None to turn the check off.
    """

    max_tensor_bytes: int = 4 * GIB
    max_total_bytes: int = 4 * GIB
    max_tensors: int = 100_000
    max_tensors_per_mib: int | None = 1024
    max_rank: int = 64
    #: Bytes of fields a reader does not know (a newer minor version's), in all.
    max_unknown_bytes: int = 64 << 10
    max_expansion: float | None = 100.0
    expansion_floor_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        for name in (
            "max_tensor_bytes",
            "max_total_bytes",
            "max_tensors",
            "max_rank",
            "max_unknown_bytes",
            "expansion_floor_bytes",
        ):
            require_int(
                getattr(self, name),
                f"DecodeLimits.{name}",
                minimum=0,
                why="of the caps, only max_tensors_per_mib and max_expansion may be None",
            )
        require_int(
            self.max_tensors_per_mib, "DecodeLimits.max_tensors_per_mib", minimum=1, optional=True
        )
        if self.max_expansion is not None:
            require_positive(
                self.max_expansion,
                "DecodeLimits.max_expansion",
                unit="a ratio of decoded to received bytes; None turns the check off",
            )

    def tensor_cap(self, size: int) -> int:
        """The most tensors a map of ``size`` bytes may hold."""
        if self.max_tensors_per_mib is None:
            return self.max_tensors
        return min(self.max_tensors, max(1 << 20, size) * self.max_tensors_per_mib >> 20)


DEFAULT_LIMITS = DecodeLimits()


def resolve_limits(limits: DecodeLimits | None) -> DecodeLimits:
    """``limits``, or :data:`DEFAULT_LIMITS` for None; TypeError for anything
    else (a dict of them, say), naming what to pass."""
    if limits is None:
        return DEFAULT_LIMITS
    if not isinstance(limits, DecodeLimits):
        hint = " (for a dict, DecodeLimits(**limits))" if isinstance(limits, dict) else ""
        raise TypeError(
            "limits must be a flwire.tensors.DecodeLimits, e.g. DecodeLimits(max_tensors=10), "
            f"or None, got {type_name(limits)}{hint}"
        )
    return limits


#: What a writer checks bytes it was handed with: the structure and the sizes,
#: not the ratio (a sender may well encode a model of zeros).
WRITER_LIMITS = DecodeLimits(max_expansion=None)


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
