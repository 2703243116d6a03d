"""Drop-in for ``common.serialization``: ``WeightSerializer``,
``DifferentialWeightSerializer`` (need PyTorch) and ``MessageSerializer``."""

from flwire.compat.serialization.message_serializer import MessageSerializer
from flwire.compat.serialization.weight_serializer import (
    DifferentialWeightSerializer,
    WeightSerializer,
)

__all__ = ["DifferentialWeightSerializer", "MessageSerializer", "WeightSerializer"]
