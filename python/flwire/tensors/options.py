"""How a tensor map is encoded: one frozen set of options for every encoder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from flwire.exceptions import SerializationException
from flwire.tensors import codecs
from flwire.tensors.lossy import LossyConfig


@dataclass(frozen=True)
class EncodeOptions:
    """Options of :func:`~flwire.tensors.encode_tensor_map` and of every message
    builder that carries weights.

    - ``compression``: a registered frame codec (``"zstd"``, the default, or
      ``"lz4"``: faster to decode, larger) or ``"none"`` (raw: decodes as
      zero-copy views). A tensor is kept raw when compressing does not make
      it at least ``min_saving`` smaller.
    - ``level``: the codec's level (None: its default; zstd 1, lz4 0).
    - ``shuffle``: byte-shuffle multi-byte dtypes first (smaller floats).
    - ``threads``: cores to use (None: all; 1: the calling thread only).
    - ``lossy``: a :class:`LossyConfig` (None: every tensor exact). Use it only
      with receivers that announce the method (``Capabilities.supported_lossy``).
    - ``stream``: message builders keep the state dict as it is, and
      ``Channel.send_message`` encodes it slice by slice as it sends it, as a
      streamed transfer (wire format section 14.5): the first record leaves at
      once, the receiver decodes each slice as it arrives, and the weights may
      be of any size (beyond 2 GiB). The state dict must not change until the
      message is sent. With ``lossy``, each slice of a tensor the config applies
      to is lossy-encoded on its own, once the lossy tensors' values are checked
      (before the first record is sent): the casts and block int8 give what a
      whole message gives (int8 when a block fits in a record), and top-k keeps
      the largest elements of each slice (its share of the tensor's ``k``)
      rather than of the whole tensor.
    - ``min_saving``: the share of a tensor's bytes compression must save for
      the tensor to be stored compressed (default 0.10). Below it the tensor
      goes raw: dense float weights under zstd save about 8 %, and compressing
      and decompressing them costs more CPU time than the saved bytes take on
      a fast network (measured: ``benchmarks.e2e.load``). A tensor above
      64 KiB (``flwire.tensors.encode.PROBE_BYTES``) is judged first on its
      start (a shuffled one on a 4 times larger probe), so that one that will
      not pay is not compressed at all. With 0.0 every tensor is compressed
      whole and kept so if that saves any byte (slow links, storage).
    """

    compression: str = "zstd"
    level: int | None = None
    shuffle: bool = False
    threads: int | None = None
    lossy: LossyConfig | None = None
    stream: bool = False
    min_saving: float = 0.10

    def __post_init__(self) -> None:
        if self.compression != codecs.NONE:
            codecs.by_name(self.compression)  # refuses an unknown name, listing the known ones
        if self.level is not None and (
            not isinstance(self.level, int) or isinstance(self.level, bool)
        ):
            raise SerializationException(f"level must be an int or None, got {self.level!r}")
        codec = self.codec
        levels = codec.levels if codec is not None else None
        if self.level is not None and codec is not None and levels is not None:
            low, high = levels
            if not low <= self.level <= high:
                raise SerializationException(
                    f"level {self.level} is out of range for {codec.name}: its levels are "
                    f"{low} to {high} (None: its default, {codec.default_level})"
                )
        if (
            not isinstance(self.min_saving, (int, float))
            or isinstance(self.min_saving, bool)
            or not 0.0 <= self.min_saving < 1.0
        ):
            raise SerializationException(
                f"min_saving must be a number in [0, 1), got {self.min_saving!r}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise SerializationException(
                f"threads must be a positive int or None, got {self.threads!r}"
            )
        if self.lossy is not None and not isinstance(self.lossy, LossyConfig):
            raise SerializationException(
                f"lossy must be a LossyConfig or None, got {type(self.lossy).__name__}"
            )

    @property
    def codec(self) -> codecs.FrameCodec | None:
        """The frame codec, or None for ``"none"``."""
        return None if self.compression == codecs.NONE else codecs.by_name(self.compression)

    @property
    def codec_level(self) -> int:
        codec = self.codec
        if self.level is not None:
            return self.level
        return codec.default_level if codec is not None else 0


DEFAULT_OPTIONS = EncodeOptions()


def resolve(options: EncodeOptions | None, **keywords: Any) -> EncodeOptions:
    """``options`` (default: :data:`DEFAULT_OPTIONS`) with the keyword conveniences
    of the top-level functions applied over it; a keyword left at None keeps
    the option as it is."""
    base = options if options is not None else DEFAULT_OPTIONS
    if not isinstance(base, EncodeOptions):
        raise SerializationException(f"options must be an EncodeOptions, got {type(base).__name__}")
    given = {k: v for k, v in keywords.items() if v is not None}
    return replace(base, **given) if given else base
