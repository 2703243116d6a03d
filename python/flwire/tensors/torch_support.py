"""The tensor codec's PyTorch adapter, imported only when torch tensors are used.

A state dict value is a torch tensor only if torch is already imported (the
caller made the tensor), so recognising one never imports torch; decoding to
torch imports it on first use, with a clear error when it is not installed
(``pip install 'flwire[torch]'``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from flwire import _optional
from flwire.exceptions import SerializationException
from flwire.tensors import dtypes

if TYPE_CHECKING:
    import torch


def import_torch() -> Any:
    """The torch module; MissingDependencyError naming the extra when absent."""
    return _optional.require("torch")


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (never imports torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def torch_dtype(info: dtypes.DtypeInfo) -> torch.dtype:
    """The torch dtype of a wire dtype."""
    dtype = getattr(import_torch(), info.name, None)
    if dtype is None:  # pragma: no cover - every wire dtype exists in supported torch
        raise SerializationException(f"this torch has no {info.name}; upgrade torch")
    return dtype


def dtype_info(dtype: torch.dtype, tensor_name: str) -> dtypes.DtypeInfo:
    """The wire dtype of a torch dtype; raise for one flwire cannot carry."""
    info = dtypes.BY_NAME.get(str(dtype).removeprefix("torch."))
    if info is None:
        raise SerializationException(
            f"tensor {tensor_name!r} has dtype {dtype}, which flwire cannot carry "
            "(quantized and bit-packed dtypes are not supported; dequantize first)"
        )
    return info


def raw_bytes(name: str, tensor: torch.Tensor) -> tuple[dtypes.DtypeInfo, tuple[int, ...], Any]:
    """(dtype, shape, C-contiguous uint8 numpy view of the bytes) of a dense CPU
    copy of ``tensor``: a view on the tensor itself when it is already one."""
    torch = import_torch()
    if tensor.layout != torch.strided:
        raise SerializationException(
            f"tensor {name!r} has layout {tensor.layout}; flwire carries dense tensors "
            "(call .to_dense() first)"
        )
    if tensor.is_quantized:
        raise SerializationException(
            f"tensor {name!r} is quantized ({tensor.dtype}); call .dequantize() first"
        )
    if tensor.device.type == "meta":
        raise SerializationException(f"tensor {name!r} is on the meta device and has no data")
    info = dtype_info(tensor.dtype, name)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    flat = t.reshape(-1)
    if flat.numel() and flat.stride(0) != 1:  # a one-element view can keep an odd stride
        flat = flat.clone(memory_format=torch.contiguous_format)
    return info, tuple(t.shape), flat.view(torch.uint8).numpy()


def from_raw(
    raw: np.ndarray, info: dtypes.DtypeInfo, shape: tuple[int, ...], zero_copy: bool
) -> torch.Tensor:
    """A torch tensor of ``shape`` over the uint8 array ``raw``: ``zero_copy``
    says ``raw`` is a view on the caller's input rather than a buffer the
    decoder allocated.

    torch tensors are always writable, so a view is kept only on writable
    input (a ``bytearray``, a writable ``memoryview`` or ``mmap``, a buffer
    the transport reassembled): the caller handed that memory over. A view on
    read-only input (``bytes``) is copied once, at memcpy speed, so that
    in-place maths on the tensor can never change the caller's bytes."""
    torch = import_torch()
    target = torch_dtype(info)
    if raw.nbytes == 0:
        return torch.empty(shape, dtype=target)
    if zero_copy and not raw.flags.writeable:
        raw = raw.copy()  # one pass; the copy is the decoder's own, writable
    flat = torch.from_numpy(raw)
    return flat.view(target).reshape(shape)
