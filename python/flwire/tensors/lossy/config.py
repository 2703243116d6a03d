"""Which lossy encoding an encoder applies, and to which tensors."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from flwire.tensors import dtypes
from flwire.tensors.lossy.params import CAST_SOURCES, CAST_TARGET, METHODS, MIN_BLOCK_SIZE

LossyMethod = Literal["float16", "bfloat16", "int8", "topk"]
NamePredicate = Callable[[str], bool]
NameFilter = NamePredicate | str | Iterable[str] | None


def _check_filter(spec: NameFilter, what: str) -> None:
    if spec is None or callable(spec) or isinstance(spec, str):
        return
    if not all(isinstance(p, str) for p in spec):
        raise ValueError(f"LossyConfig.{what} must be a callable, a glob pattern or patterns")


def _matches(spec: NameFilter, name: str) -> bool:
    """Whether ``name`` passes a filter: a callable, a glob pattern, or several."""
    if callable(spec):
        return bool(spec(name))
    patterns = (spec,) if isinstance(spec, str) else tuple(spec or ())
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class LossyConfig:
    """Which lossy encoding an encoder applies, and to which tensors.

    ``method``: ``"float16"`` / ``"bfloat16"`` (cast; for float32/float64
    tensors), ``"int8"`` (blockwise, ``block_size`` elements per float32 scale)
    or ``"topk"`` (the ``topk_k`` elements of largest magnitude, or
    ``ceil(topk_fraction * n)`` when ``topk_k`` is None; meant for deltas).

    A tensor is encoded lossily only if it is float32, float64, float16 or
    bfloat16 (and, for the casts, wider than 2 bytes), has at least
    ``min_elements`` elements (biases and norms stay exact), passes ``include``
    (when given) and not ``exclude``, and its payload is smaller than its raw
    bytes. ``include`` / ``exclude`` are a callable on the tensor name, a glob
    pattern (``"*.bias"``) or a list of patterns (give a tuple to keep the
    config hashable). Every other tensor is sent losslessly, bit for bit.
    """

    method: LossyMethod
    block_size: int = 64
    topk_fraction: float = 0.01
    topk_k: int | None = None
    min_elements: int = 1024
    include: NameFilter = None
    exclude: NameFilter = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown lossy method {self.method!r}; use one of {', '.join(METHODS)}"
            )
        if not isinstance(self.block_size, int) or not (
            MIN_BLOCK_SIZE <= self.block_size < 1 << 32
        ):
            raise ValueError(
                f"block_size must be an int in [{MIN_BLOCK_SIZE}, 2^32), got "
                f"{self.block_size!r} (smaller "
                "blocks carry more float32 scale than int8 values)"
            )
        if not (isinstance(self.topk_fraction, (int, float)) and 0 < self.topk_fraction <= 1):
            raise ValueError(f"topk_fraction must be in (0, 1], got {self.topk_fraction!r}")
        if self.topk_k is not None and (not isinstance(self.topk_k, int) or self.topk_k < 1):
            raise ValueError(f"topk_k must be a positive int or None, got {self.topk_k!r}")
        if not isinstance(self.min_elements, int) or self.min_elements < 0:
            raise ValueError(f"min_elements must be an int >= 0, got {self.min_elements!r}")
        _check_filter(self.include, "include")
        _check_filter(self.exclude, "exclude")

    @property
    def wire_method(self) -> int:
        """The ``flwire.v1.Lossy`` enum value of ``method``."""
        return METHODS[self.method]

    def k_for(self, n: int) -> int:
        """Number of elements top-k keeps of a tensor of ``n`` elements."""
        k = self.topk_k if self.topk_k is not None else math.ceil(self.topk_fraction * n)
        return max(1, min(n, k))

    def applies_to(self, name: str, dtype: dtypes.DtypeInfo, numel: int) -> bool:
        """Whether a tensor is a candidate (the payload size is checked later)."""
        if not dtype.is_float or numel == 0 or numel < self.min_elements:
            return False
        if self.wire_method in CAST_TARGET and dtype.wire not in CAST_SOURCES:
            return False  # a cast to the same width gains nothing
        if self.include is not None and not _matches(self.include, name):
            return False
        return self.exclude is None or not _matches(self.exclude, name)
