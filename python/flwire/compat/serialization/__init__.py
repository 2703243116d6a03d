"""Drop-in for ``common.serialization``: ``MessageSerializer``, and
``WeightSerializer`` / ``DifferentialWeightSerializer`` (which need PyTorch and
import it when first asked for)."""

from typing import TYPE_CHECKING, Any

from flwire.compat.serialization.message_serializer import MessageSerializer

if TYPE_CHECKING:
    from flwire.compat.serialization.weight_serializer import (
        DifferentialWeightSerializer,
        WeightSerializer,
    )

__all__ = ["DifferentialWeightSerializer", "MessageSerializer", "WeightSerializer"]


def __getattr__(name: str) -> Any:
    if name in ("WeightSerializer", "DifferentialWeightSerializer"):
        from flwire.compat.serialization import weight_serializer

        return getattr(weight_serializer, name)
    raise AttributeError(f"module 'flwire.compat.serialization' has no attribute {name!r}")
