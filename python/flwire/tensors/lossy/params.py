"""The ``Tensor.lossy`` fields of a tensor, and the payload layout they imply
(wire format, section 9.1): what a reader checks before it allocates."""

from __future__ import annotations

from dataclasses import dataclass

from flwire.exceptions import SerializationException
from flwire.tensors import dtypes
from flwire.v1 import tensor_pb2 as pb

#: Method short names (as in LossyConfig) and their wire enum values.
METHODS: dict[str, int] = {
    "float16": pb.LOSSY_CAST_FLOAT16,
    "bfloat16": pb.LOSSY_CAST_BFLOAT16,
    "int8": pb.LOSSY_BLOCK_INT8,
    "topk": pb.LOSSY_TOP_K,
}
METHOD_NAMES: dict[int, str] = {v: k for k, v in METHODS.items()}

#: Casts are only worth it for dtypes wider than their 2-byte target.
CAST_SOURCES = (pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64)
CAST_TARGET: dict[int, dtypes.DtypeInfo] = {
    pb.LOSSY_CAST_FLOAT16: dtypes.FLOAT16,
    pb.LOSSY_CAST_BFLOAT16: dtypes.BFLOAT16,
}
#: One float32 scale per int8 block.
SCALE_BYTES = 4
#: Smallest block int8 block: below it the float32 scales outweigh the int8
#: values, and a reader would hold them beside the output (spec section 9.1).
MIN_BLOCK_SIZE = 8
#: Top-k keeps at most one element in this many (spec section 9.1): its payload
#: then stays under 3/8 of the tensor, which a reader holds beside the output.
MAX_TOPK_DENSITY = 8
#: Top-k indices are uint32 below this many elements, uint64 from it on.
UINT32_INDEX_LIMIT = 1 << 32


@dataclass(frozen=True)
class LossyParams:
    """The ``Tensor.lossy`` fields of one tensor."""

    method: int
    block_size: int = 0
    k: int = 0

    @property
    def name(self) -> str:
        """Short method name: ``float16``, ``bfloat16``, ``int8`` or ``topk``."""
        return METHOD_NAMES.get(self.method, str(self.method))

    def describe(self) -> str:
        if self.method == pb.LOSSY_BLOCK_INT8:
            return f"int8/{self.block_size}"
        if self.method == pb.LOSSY_TOP_K:
            return f"topk/{self.k}"
        return self.name


def element_dtype(method: int) -> dtypes.DtypeInfo:
    """The element type the filter works on for a payload of ``method``: the
    2-byte float of a cast, bytes (width 1: no shuffle) otherwise."""
    return CAST_TARGET.get(method, dtypes.UINT8)


def filter_allowed(method: int) -> bool:
    """Byte shuffle is defined for cast payloads only."""
    return method in CAST_TARGET


def index_width(numel: int) -> int:
    """Bytes per top-k index for a tensor of ``numel`` elements."""
    return 4 if numel < UINT32_INDEX_LIMIT else 8


def payload_size(dtype: dtypes.DtypeInfo, numel: int, params: LossyParams, what: str) -> int:
    """The exact payload size for a lossy tensor; raise SerializationException
    (naming ``what``) for any combination a reader must refuse."""
    method = params.method
    if method not in METHOD_NAMES:
        raise SerializationException(f"{what} uses unknown lossy method {method}; upgrade flwire")
    name = METHOD_NAMES[method]
    if not dtype.is_float:
        raise SerializationException(
            f"{what}: lossy method {name} applies to floating tensors only, not {dtype.name}"
        )
    if method in CAST_TARGET:
        if dtype.wire not in CAST_SOURCES:
            raise SerializationException(
                f"{what}: lossy cast to {name} of a {dtype.name} tensor is not allowed "
                "(casts apply to float32 and float64 tensors)"
            )
        return numel * CAST_TARGET[method].itemsize
    if method == pb.LOSSY_BLOCK_INT8:
        if params.block_size < MIN_BLOCK_SIZE:
            raise SerializationException(
                f"{what}: int8 quantization with block_size {params.block_size} (must be >= "
                f"{MIN_BLOCK_SIZE}: smaller blocks carry more scale than values) [lossy_params]"
            )
        blocks = -(-numel // params.block_size)
        return _smaller(SCALE_BYTES * blocks + numel, numel * dtype.itemsize, name, what)
    if params.k * MAX_TOPK_DENSITY > numel:
        raise SerializationException(
            f"{what}: top-k keeps k={params.k} elements of a tensor of {numel} elements "
            f"(at most one in {MAX_TOPK_DENSITY}: a denser tensor is sent losslessly) "
            "[lossy_params]"
        )
    return params.k * (dtype.itemsize + index_width(numel))


def _smaller(size: int, raw: int, name: str, what: str) -> int:
    """``size``, when a payload of that size is smaller than the raw bytes: a writer
    sends any other tensor losslessly, and a reader refuses it, so that
    reconstruction never holds more than about 1.5 times the tensor (spec section
    9.1, [lossy_not_smaller])."""
    if raw and size >= raw:
        raise SerializationException(
            f"{what}: its {name} lossy payload of {size} bytes is not smaller than the "
            f"tensor's {raw} raw bytes (a writer sends such a tensor losslessly) "
            "[lossy_not_smaller]"
        )
    return size
