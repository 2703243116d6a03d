"""Drop-in replacements for ``common.serialization.weight_serializer``.

Same class and method names and call shapes as the old module, but the bytes are
a ``flwire.v1.TensorMap`` (zstd-compressed raw tensors) instead of
pickle + gzip + base64: nothing is ever unpickled, and any language can read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwire import _optional
from flwire.exceptions import SerializationException
from flwire.tensors import DecodeLimits, LossyConfig, decode_tensor_map, encode_tensor_map
from flwire.tensors.sources import require_state_dict

_optional.require("torch")  # a clear error naming the extra when it is missing
import torch  # noqa: E402


class WeightSerializer:
    """Serialize model weights (state dicts) to bytes and back."""

    @staticmethod
    def serialize_weights(
        state_dict: Mapping[str, torch.Tensor],
        compression: bool = True,
        *,
        lossy: LossyConfig | None = None,
    ) -> bytes:
        """Encode a state dict as TensorMap bytes (with ``compression``, zstd for each
        tensor it makes at least 10 % smaller: dense float weights go raw, see
        :class:`~flwire.EncodeOptions` ``min_saving``).

        ``lossy`` opts in to a lossy encoding of the floating tensors it selects
        (:class:`~flwire.LossyConfig`); deserializing gives
        the reconstructed tensors in their own dtype and shape.
        """
        return encode_tensor_map(
            require_state_dict(state_dict, "state_dict"),
            compression="zstd" if compression else "none",
            lossy=lossy,
        )

    @staticmethod
    def deserialize_weights(
        encoded_data: bytes,
        compression: bool = True,
        *,
        limits: DecodeLimits | None = None,
        expect: Mapping[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Decode TensorMap bytes to a state dict.

        ``compression`` is accepted for compatibility; the bytes say per tensor
        whether they are compressed. ``limits`` bounds what decoding may cost
        (default :data:`flwire.tensors.DEFAULT_LIMITS`); ``expect`` (e.g. the
        global model's state dict) is the layout the caller expects: a tensor
        not in it, missing from it, or of another dtype or shape is refused
        before anything is allocated. See :func:`flwire.decode_tensor_map` for
        who owns the decoded memory.
        """
        del compression  # self-describing format
        return decode_tensor_map(encoded_data, limits=limits, expect=expect)

    @staticmethod
    def get_weights_size(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Parameter count and raw size of a state dict (same keys as the old API)."""
        require_state_dict(state_dict, "state_dict")
        total_params = sum(t.numel() for t in state_dict.values())
        total_bytes = sum(t.element_size() * t.numel() for t in state_dict.values())
        return {
            "total_parameters": total_params,
            "total_bytes": total_bytes,
            "total_mb": total_bytes / (1024 * 1024),
            "layer_count": len(state_dict),
            "layer_info": {k: list(v.shape) for k, v in state_dict.items()},
        }


def _check_pair(key: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dtype != b.dtype:
        raise SerializationException(
            f"cannot combine {key!r}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
        )


class DifferentialWeightSerializer:
    """Weight differences (deltas) between rounds.

    Floating and integer tensors use subtraction/addition; bool tensors use
    XOR, so every dtype round-trips (``apply(old, diff(old, new)) == new`` up to
    floating-point rounding).
    """

    @staticmethod
    def compute_weight_diff(
        old_weights: Mapping[str, torch.Tensor], new_weights: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``new - old`` for every key present in both."""
        diff = {}
        for key, old in old_weights.items():
            if key in new_weights:
                new = new_weights[key]
                _check_pair(key, old, new)
                diff[key] = new ^ old if new.dtype == torch.bool else new - old
        return diff

    @staticmethod
    def apply_weight_diff(
        base_weights: Mapping[str, torch.Tensor], diff: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``base + diff`` where a diff exists, else a copy of the base tensor."""
        updated = {}
        for key, base in base_weights.items():
            if key in diff:
                delta = diff[key]
                _check_pair(key, base, delta)
                updated[key] = base ^ delta if base.dtype == torch.bool else base + delta
            else:
                updated[key] = base.clone()
        return updated
