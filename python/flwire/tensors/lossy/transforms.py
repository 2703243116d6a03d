"""The lossy transforms: a floating tensor's raw bytes to its payload and back.

The tensor codec puts the payload where the raw bytes would be (CRC, filter
and codec then apply to the payload) and records the method in
``Tensor.lossy`` (docs/wire-format.md section 9.1, which also states the error
bounds the property tests check). Everything is vectorized numpy, in chunks of
CHUNK_ELEMENTS so that temporaries stay small and the encoder's chunks run on
every core; nothing loops over elements in Python and nothing needs torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from flwire.exceptions import SerializationException
from flwire.tensors import dtypes, parallel
from flwire.tensors.lossy import floats
from flwire.tensors.lossy.config import LossyConfig
from flwire.tensors.lossy.params import (
    CAST_TARGET,
    MAX_TOPK_DENSITY,
    SCALE_BYTES,
    LossyParams,
    index_width,
    payload_size,
)
from flwire.v1 import tensor_pb2 as pb

#: Elements converted per step: bounds the temporaries of a large tensor.
CHUNK_ELEMENTS = 1 << 18
#: int8 levels are -127..127 (-128 is never written), so a scale is max|x| / 127.
INT8_LEVELS = 127
_F32_TINY = np.float32(2.0**-149)  # the smallest positive float32 (subnormal)
_F32_NORMAL = np.float32(2.0**-126)
#: The sign-less bits of a 16-bit float, and those of infinity per cast target.
_ABS_BITS = 0x7FFF
_INF_BITS = {dtypes.FLOAT16.wire: 0x7C00, dtypes.BFLOAT16.wire: 0x7F80}


def _chunks(n: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _values(raw: np.ndarray, info: dtypes.DtypeInfo, lo: int, hi: int) -> np.ndarray:
    """Elements ``[lo, hi)`` of a float tensor's raw bytes as float32 (float64 for
    float64), exact: a view unless the tensor is 16-bit."""
    width = info.itemsize
    return floats.to_float(raw[lo * width : hi * width], info)


def _in_parallel(steps: list[Any], work: Any, itemsize: int, threads: int | None) -> None:
    """``work(step)`` for each step (whose first two items bound its elements), on
    the codec's threads (numpy releases the GIL); the first failing step, in
    order, raises."""
    sizes = [(step[1] - step[0]) * itemsize for step in steps]
    parallel.run_parallel(lambda i: work(steps[i]), sizes, threads)


def _block_steps(n: int, block: int) -> list[tuple[int, int, int]]:
    """(first element, end element, blocks) of each step over ``n`` elements in
    blocks of ``block``: whole blocks, about CHUNK_ELEMENTS at a time, then the
    last, shorter block if there is one."""
    full = n // block
    per_step = max(1, CHUNK_ELEMENTS // block)
    steps = [
        (r * block, min(r + per_step, full) * block, min(per_step, full - r))
        for r in range(0, full, per_step)
    ]
    if n % block:
        steps.append((full * block, n, 1))
    return steps


def _dequantize_steps(n: int, block: int) -> list[tuple[int, int, int]]:
    """As :func:`_block_steps`, except that a block larger than CHUNK_ELEMENTS is
    cut into steps of at most CHUNK_ELEMENTS (all of one block, one scale), so
    that a step's temporaries stay small whatever ``block_size`` the writer chose
    (decoding only: encoding needs each block whole, for its scale)."""
    if block <= CHUNK_ELEMENTS:
        return _block_steps(n, block)
    return [(lo, hi, 1) for b in range(0, n, block) for lo, hi in _sub_chunks(b, n, block)]


def _sub_chunks(start: int, n: int, block: int) -> list[tuple[int, int]]:
    end = min(start + block, n)
    return [(lo, min(lo + CHUNK_ELEMENTS, end)) for lo in range(start, end, CHUNK_ELEMENTS)]


def _index_dtype(numel: int) -> np.dtype[Any]:
    return np.dtype("<u4") if index_width(numel) == 4 else np.dtype("<u8")


# ----------------------------------------------------------------------------- encoding


def encode(
    name: str,
    dtype: dtypes.DtypeInfo,
    raw: np.ndarray,
    config: LossyConfig,
    threads: int | None = None,
) -> tuple[LossyParams, np.ndarray] | None:
    """``(params, payload bytes)`` of a tensor's raw bytes (uint8), or None when
    ``config`` leaves the tensor lossless. Raises SerializationException for a
    value the method cannot carry (a float16 overflow, a non-finite int8 input).
    ``threads`` as in EncodeOptions."""
    numel = raw.nbytes // dtype.itemsize
    if not config.applies_to(name, dtype, numel):
        return None
    method = config.wire_method
    if method in CAST_TARGET:
        params, payload = LossyParams(method), _cast(name, dtype, raw, method, threads)
    elif method == pb.LOSSY_BLOCK_INT8:
        params = LossyParams(method, block_size=config.block_size)
        payload = _quantize_int8(name, dtype, raw, config.block_size, threads)
    else:
        k = config.k_for(numel)
        if k * MAX_TOPK_DENSITY > numel:
            return None  # too dense to be worth the loss (spec section 9.1)
        params, payload = LossyParams(method, k=k), _top_k(dtype, raw, k)
    if payload.nbytes >= raw.nbytes:
        return None  # lossy and not even smaller: send it exactly
    return params, payload


def _cast(
    name: str, dtype: dtypes.DtypeInfo, raw: np.ndarray, method: int, threads: int | None
) -> np.ndarray:
    target = CAST_TARGET[method]
    n = raw.nbytes // dtype.itemsize
    out = np.empty(n, dtype=np.uint16)

    def step(bounds: tuple[int, int]) -> None:
        lo, hi = bounds
        x = _values(raw, dtype, lo, hi)
        y = floats.cast_bits(x, target)
        infinite = (y & _ABS_BITS) == _INF_BITS[target.wire]
        if infinite.any():  # rare: only then look at which inputs were finite
            overflow = np.flatnonzero(infinite)
            overflow = overflow[np.isfinite(x[overflow])]
            if overflow.size:
                _refuse_overflow(name, method, target, float(x[overflow[0]]), lo + int(overflow[0]))
        out[lo:hi] = y

    # torch's kernels spread one call over the cores themselves.
    step_size = n if floats.whole_tensor_kernels() and dtype.itemsize == 4 else CHUNK_ELEMENTS
    _in_parallel(_chunks(n, max(step_size, 1)), step, dtype.itemsize, threads)
    return out.view(np.uint8)


def _refuse_overflow(
    name: str, method: int, target: dtypes.DtypeInfo, value: float, index: int
) -> None:
    hint = (
        "; use bfloat16 (float32's range) or int8 for it"
        if method == pb.LOSSY_CAST_FLOAT16
        else "; exclude the tensor from lossy encoding"
    )
    raise SerializationException(
        f"tensor {name!r}: value {value!r} at flat index {index} overflows {target.name} "
        f"(lossy cast would turn it into infinity){hint}"
    )


def _row_max(a: np.ndarray) -> np.ndarray:
    """The maximum of each row of ``a`` (NaN if the row holds one), by halving
    the rows: numpy reduces short rows one at a time, which is much slower."""
    while a.shape[1] > 1 and a.shape[1] % 2 == 0:
        half = a.shape[1] // 2
        a = np.maximum(a[:, :half], a[:, half:])
    return a[:, 0] if a.shape[1] == 1 else np.max(a, axis=1)


def _not_finite(name: str, dtype: dtypes.DtypeInfo) -> SerializationException:
    """What int8 quantization raises for a tensor holding NaN or infinity."""
    return SerializationException(
        f"tensor {name!r} holds NaN or infinity"
        + (" (or values beyond float32's range)" if dtype.itemsize == 8 else "")
        + ": int8 quantization needs finite values; exclude the tensor or use a cast"
    )


#: The largest finite value of each cast's target.
_MAX_FINITE = {dtypes.FLOAT16.wire: 65504.0, dtypes.BFLOAT16.wire: 3.3895313892515355e38}


def check_encodable(
    name: str, dtype: dtypes.DtypeInfo, raw: np.ndarray, config: LossyConfig
) -> None:
    """Raise, without encoding, the SerializationException :func:`encode` would
    raise for this tensor's values (a cast that overflows, int8 on NaN or
    infinity), with the same message and the index in the whole tensor: a
    streamed transfer checks its tensors before its first record goes out, so
    that a value refused halfway leaves no partial stream behind. One pass over
    the values; nothing to check when ``config`` leaves the tensor exact, or for
    top-k (which carries any value)."""
    n = raw.nbytes // dtype.itemsize
    if not config.applies_to(name, dtype, n):
        return
    method = config.wire_method
    if method in CAST_TARGET:
        target = CAST_TARGET[method]
        for lo, hi in _chunks(n, CHUNK_ELEMENTS):
            x = _values(raw, dtype, lo, hi)
            # Beyond the target's largest finite value (NaN compares false): the
            # candidates, which the cast itself then rounds (a few round down).
            big = np.flatnonzero(np.abs(x) > _MAX_FINITE[target.wire])
            big = big[np.isfinite(x[big])]
            if big.size:
                infinite = (floats.cast_bits(x[big], target) & _ABS_BITS) == _INF_BITS[target.wire]
                if infinite.any():
                    at = int(big[int(np.argmax(infinite))])
                    _refuse_overflow(name, method, target, float(x[at]), lo + at)
    elif method == pb.LOSSY_BLOCK_INT8:
        for lo, hi in _chunks(n, CHUNK_ELEMENTS):
            with np.errstate(over="ignore"):  # float64 beyond float32's range: infinity
                x = _values(raw, dtype, lo, hi).astype(np.float32, copy=False)
            if not np.isfinite(x).all():
                raise _not_finite(name, dtype)


def _int8_scales(name: str, dtype: dtypes.DtypeInfo, part: np.ndarray) -> np.ndarray:
    """The float32 scale of each row (block) of ``part`` (float32)."""
    amax = _row_max(np.abs(part))
    if not np.isfinite(amax).all():
        raise _not_finite(name, dtype)
    # +0 for an all-zero block; the smallest float32 where max/127 underflows.
    scale = np.where(amax > 0, np.maximum(amax / np.float32(INT8_LEVELS), _F32_TINY), 0)
    scale = scale.astype(np.float32)
    # Near float32's maximum, 127 * scale must not overflow on decoding.
    with np.errstate(over="ignore"):
        top = np.isinf(scale * np.float32(INT8_LEVELS))
    if top.any():
        scale = np.where(top, np.nextafter(scale, np.float32(0)), scale).astype(np.float32)
    return scale


def _quantize_int8(
    name: str, dtype: dtypes.DtypeInfo, raw: np.ndarray, block: int, threads: int | None
) -> np.ndarray:
    n = raw.nbytes // dtype.itemsize
    blocks = -(-n // block)
    payload = np.empty(SCALE_BYTES * blocks + n, dtype=np.uint8)
    scales = payload[: SCALE_BYTES * blocks].view("<f4")
    q = payload[SCALE_BYTES * blocks :].view(np.int8)

    def step(bounds: tuple[int, int, int]) -> None:
        lo, hi, rows = bounds
        with np.errstate(over="ignore"):  # exact for 16-bit; RNE for float64
            part = _values(raw, dtype, lo, hi).astype(np.float32, copy=False).reshape(rows, -1)
        scale = _int8_scales(name, dtype, part)
        scales[lo // block : lo // block + rows] = scale
        y = part / np.where(scale == 0, np.float32(1), scale)[:, None]
        np.rint(y, out=y)  # half to even
        if ((scale > 0) & (scale < _F32_NORMAL)).any():  # subnormal scales can exceed 127
            np.clip(y, -INT8_LEVELS, INT8_LEVELS, out=y)
        q[lo:hi] = y.reshape(-1)

    _in_parallel(_block_steps(n, block), step, dtype.itemsize, threads)
    return payload


def _top_indices(mag: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the ``k`` largest entries of ``mag``, ranked as
    section 9.1 says: NaN above every number, then by magnitude, and between
    equals (NaNs among themselves) the lower index first, so that the kept set
    is the same for every writer. Only the positive entries are partitioned
    (partition crawls through long runs of equal values, which is what a sparse
    delta is made of), and only values: the ties at the threshold are then
    taken in index order."""
    n = mag.size
    if k >= n:
        return np.arange(n)
    nan = np.flatnonzero(np.isnan(mag))
    if nan.size >= k:
        return nan[:k]
    rest = k - nan.size
    positive = np.flatnonzero(mag > 0)  # NaN compares false
    if positive.size <= rest:  # every positive entry, then the first zeros
        zeros = np.flatnonzero(mag == 0)[: rest - positive.size]
        return np.sort(np.concatenate([nan, positive, zeros]))
    values = mag[positive]
    threshold = np.partition(values, positive.size - rest)[positive.size - rest]
    above = positive[values > threshold]
    ties = positive[values == threshold][: rest - above.size]
    return np.sort(np.concatenate([nan, above, ties]))


def _top_k(dtype: dtypes.DtypeInfo, raw: np.ndarray, k: int) -> np.ndarray:
    n = raw.nbytes // dtype.itemsize
    idx = _top_indices(np.abs(_values(raw, dtype, 0, n)), k)
    width = dtype.itemsize
    payload = np.empty(k * (width + index_width(n)), dtype=np.uint8)
    elements = floats.aligned(raw, width).view(f"<u{width}")
    payload[: k * width].view(f"<u{width}")[:] = elements[idx]
    payload[k * width :].view(_index_dtype(n))[:] = idx
    return payload


# ----------------------------------------------------------------------------- decoding


#: One share of a decoding: (bytes it touches, the work).
Job = tuple[int, Callable[[], None]]


def decode(
    name: str, dtype: dtypes.DtypeInfo, numel: int, params: LossyParams, payload: np.ndarray
) -> np.ndarray:
    """The logical tensor's raw bytes (a fresh uint8 array of numel x width)
    from a payload whose size :func:`payload_size` already checked."""
    out, phases = decode_jobs(name, dtype, numel, params, payload)
    for phase in phases:
        for _, work in phase:
            work()
    return out


def in_place(dtype: dtypes.DtypeInfo, numel: int, params: LossyParams, payload_bytes: int) -> bool:
    """Whether a payload that must be decompressed anyway may be decompressed into
    the end of the tensor's output buffer and reconstructed there (pass that
    buffer to :func:`decode_jobs`), so that no second buffer is alive: the casts
    (a payload of half or a quarter of the output) and block int8 on 16-bit
    dtypes (or tiny blocks), whose payload is over half the output. Otherwise the
    peak would be the output plus the payload: 1.5 times the tensor's size for a
    cast from float32, about 1.6 times for block int8 on 16-bit dtypes (block int8
    on wider dtypes has a payload of about a quarter of the output, which is read
    faster from its own buffer)."""
    if params.method in CAST_TARGET:
        return True
    out = numel * dtype.itemsize
    return params.method == pb.LOSSY_BLOCK_INT8 and out < 2 * payload_bytes <= 2 * out


def decode_jobs(
    name: str,
    dtype: dtypes.DtypeInfo,
    numel: int,
    params: LossyParams,
    payload: np.ndarray,
    out: np.ndarray | None = None,
    *,
    into: np.ndarray | None = None,
) -> tuple[np.ndarray, list[list[Job]]]:
    """The output buffer of a lossy tensor (numel x width bytes) and the jobs
    that fill it, in phases: the jobs of one phase are independent (a decoder
    runs those of all its tensors on every core), and a phase starts when the
    one before it has ended. Everything that can be refused is refused here,
    before the output is allocated. ``out`` is the output buffer when the
    payload lies at its end (see :func:`in_place`); ``into``, when the payload
    lies elsewhere (block int8 only: the casts are reconstructed in place, and
    top-k has :func:`scatter_top_k_into`)."""
    what = f"tensor {name!r}"
    if payload.nbytes != payload_size(dtype, numel, params, what):
        raise SerializationException(f"{what}: lossy payload has {payload.nbytes} bytes")
    method = params.method
    if out is not None and not in_place(dtype, numel, params, payload.nbytes):
        raise ValueError(f"{what}: this lossy payload is not reconstructed in place")
    if method in CAST_TARGET:
        return _widen_jobs(dtype, numel, CAST_TARGET[method], payload, out)
    if method == pb.LOSSY_BLOCK_INT8:
        return _dequantize_jobs(dtype, numel, params.block_size, payload, out, into)
    if into is not None:
        raise ValueError(f"{what}: only block int8 is reconstructed into a buffer given")
    buf, jobs = _scatter_top_k(what, dtype, numel, params.k, payload)
    return buf, [jobs]


def _widen_jobs(
    dtype: dtypes.DtypeInfo,
    n: int,
    source: dtypes.DtypeInfo,
    payload: np.ndarray,
    out: np.ndarray | None,
) -> tuple[np.ndarray, list[list[Job]]]:
    bits = floats.aligned(payload, source.itemsize).view("<u2")
    width = dtype.itemsize
    copy = out is not None
    if out is None:
        out = np.empty(n * width, dtype=np.uint8)
        step = n if floats.whole_tensor_kernels() else CHUNK_ELEMENTS
        phases = [[(lo, hi, 0) for lo, hi in _chunks(n, max(step, 1))]]
    else:
        steps = [(lo, hi, 0) for lo, hi in _chunks(n, CHUNK_ELEMENTS)]
        phases = _in_place_phases(steps, n, width, source.itemsize)
    values = out.view("<f8" if width == 8 else "<f4")

    def job(lo: int, hi: int, _: int) -> Job:
        def work() -> None:
            narrow = bits[lo:hi]
            # In place, a step's own bits may lie where it writes: read them first.
            floats.widen_into(narrow.copy() if copy else narrow, source, values[lo:hi])

        return (hi - lo) * width, work

    return out, [[job(*step) for step in phase] for phase in phases]


def _dequantize_jobs(
    dtype: dtypes.DtypeInfo,
    n: int,
    block: int,
    payload: np.ndarray,
    out: np.ndarray | None,
    into: np.ndarray | None = None,
) -> tuple[np.ndarray, list[list[Job]]]:
    blocks = -(-n // block)
    scale_bytes = payload[: SCALE_BYTES * blocks]
    # In place, the scales lie where the first half of the output goes: move them.
    scales = (
        scale_bytes.copy() if out is not None else floats.aligned(scale_bytes, SCALE_BYTES)
    ).view("<f4")
    q = payload[SCALE_BYTES * blocks :].view(np.int8)
    width = dtype.itemsize
    direct = dtype.wire == dtypes.FLOAT32.wire  # the products are the output: no temporary
    steps = _dequantize_steps(n, block)
    if out is None:
        out = into if into is not None else np.empty(n * width, dtype=np.uint8)
        phases = [steps]
    else:
        phases = _in_place_phases(steps, n, width, 1)

    def job(lo: int, hi: int, rows: int) -> Job:
        def work() -> None:
            first = lo // block
            product = out[lo * width : hi * width].view("<f4") if direct else None
            # Reads all of this step's int8 values before anything is written.
            wide = np.multiply(
                q[lo:hi].reshape(rows, -1),
                scales[first : first + rows, None],
                out=None if product is None else product.reshape(rows, -1),
                dtype=np.float32,
            )
            if not direct:
                out[lo * width : hi * width] = floats.from_float32(wide.reshape(-1), dtype)

        return (hi - lo) * width, work

    return out, [[job(*step) for step in phase] for phase in phases]


def _in_place_phases(
    steps: list[tuple[int, int, int]], n: int, width: int, source: int
) -> list[list[tuple[int, int, int]]]:
    """Steps grouped so that the output can be written over the values it comes
    from: those (``source`` bytes each) lie at the end of the output, element
    ``e``'s at byte ``(width - source) * n + source * e``, and element ``e`` is
    written to bytes ``[width * e, width * (e + 1))``. A phase that starts at
    element ``a`` (all before it done) takes steps whose writes end at or below
    ``(width - source) * n + source * a``, where the values still to be read
    begin, so its steps may run in any order; a step that does not fit starts
    the next phase (alone, it is safe: it reads its values before it writes)."""
    phases: list[list[tuple[int, int, int]]] = []
    start = 0
    for step in steps:
        if phases and width * step[1] <= (width - source) * n + source * start:
            phases[-1].append(step)
        else:
            phases.append([step])
            start = step[0]
    return phases


def scatter_top_k_into(
    name: str, dtype: dtypes.DtypeInfo, params: LossyParams, payload: np.ndarray, out: np.ndarray
) -> None:
    """Reconstruct a top-k tensor straight into ``out`` (its ``numel x width``
    bytes, any contents): zeros, then the kept values at their indices, so that
    no second buffer of the tensor's size is alive (a chunk of a streamed tensor).
    The payload's size and indices are checked before ``out`` is written."""
    width = dtype.itemsize
    n = out.nbytes // width
    what = f"tensor {name!r}"
    if payload.nbytes != payload_size(dtype, n, params, what):
        raise SerializationException(f"{what}: lossy payload has {payload.nbytes} bytes")
    _, jobs = _scatter_top_k(what, dtype, n, params.k, payload, out)
    for _, work in jobs:
        work()


def _scatter_top_k(
    what: str,
    dtype: dtypes.DtypeInfo,
    n: int,
    k: int,
    payload: np.ndarray,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Job]]:
    """The output (fresh zeros, or ``out`` zeroed by the job) and the job that
    scatters the kept values into it; the indices are checked here, first."""
    width = dtype.itemsize
    index_dtype = _index_dtype(n)
    # Not copied when unaligned (an odd k of a 16-bit tensor): numpy reads unaligned
    # indices in small buffers, and a copy would hold up to a quarter of the tensor.
    index = payload[k * width :].view(index_dtype)
    # Checked before the output is allocated: ascending, in range, no duplicates.
    if k > 1 and not bool(np.all(index[1:] > index[:-1])):
        bad = int(np.argmin(index[1:] > index[:-1]))
        raise SerializationException(
            f"{what}: top-k indices are not strictly ascending "
            f"(index {int(index[bad + 1])} at position {bad + 1} follows {int(index[bad])})"
        )
    if k and int(index[-1]) >= n:
        raise SerializationException(
            f"{what}: top-k index {int(index[-1])} is out of range for {n} elements"
        )
    values = floats.aligned(payload[: k * width], width).view(f"<u{width}")
    given = out is not None
    buf = out if out is not None else np.zeros(n * width, dtype=np.uint8)

    def work() -> None:
        if given:
            buf.fill(0)
        if k:
            buf.view(f"<u{width}")[index] = values

    return buf, [((n if given else k) * width, work)]
