"""Aggregation on the server side: checking client updates before they count
(:mod:`~flwire.aggregation.screening`) and folding them, as they arrive, into
a weighted average (:mod:`~flwire.aggregation.fedavg`). Needs torch
(``pip install 'flwire[torch]'``)."""

from flwire import _optional

_optional.require("torch")  # named with its extra when missing, not an ImportError

from flwire.aggregation.fedavg import MAX_EXAMPLES, StreamingFedAvg  # noqa: E402
from flwire.aggregation.screening import UpdatePolicy, UpdateRefused, screen  # noqa: E402

__all__ = ["MAX_EXAMPLES", "StreamingFedAvg", "UpdatePolicy", "UpdateRefused", "screen"]
