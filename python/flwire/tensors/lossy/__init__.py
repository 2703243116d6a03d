"""Opt-in lossy tensor encodings: float16/bfloat16 casts, blockwise int8, top-k.

:class:`LossyConfig` says which method an encoder applies to which tensors;
:mod:`.params` holds what a reader checks of ``Tensor.lossy`` before it
allocates; :mod:`.transforms` turns raw bytes into payloads and back (numpy
only). Specified in docs/wire-format.md section 9.1.
"""

from flwire.tensors.lossy.config import LossyConfig, LossyMethod, NameFilter
from flwire.tensors.lossy.params import (
    METHOD_NAMES,
    METHODS,
    LossyParams,
    element_dtype,
    filter_allowed,
    payload_size,
)
from flwire.tensors.lossy.transforms import (
    Job,
    check_encodable,
    decode,
    decode_jobs,
    encode,
    in_place,
    scatter_top_k_into,
)

__all__ = [
    "METHODS",
    "check_encodable",
    "Job",
    "METHOD_NAMES",
    "LossyConfig",
    "LossyMethod",
    "LossyParams",
    "NameFilter",
    "decode",
    "decode_jobs",
    "element_dtype",
    "encode",
    "filter_allowed",
    "in_place",
    "payload_size",
    "scatter_top_k_into",
]
