"""One scale-out aggregator in a process of its own, for tests that kill it:

    python -m tests.integration.scaleout_aggregator BOOTSTRAP JOB ID [--hang-in-transaction]

It folds round 1 over :func:`reference_state`, logs to stdout, and with
``--hang-in-transaction`` prints ``IN-TRANSACTION <clients>`` inside its first
transaction (its partial produced, its offsets not sent, nothing committed)
and then waits there until it is killed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from flwire.aggregation.scaleout import Aggregator
from flwire.compat.models.neural_networks import SimpleCNN
from flwire.tensors import EncodeOptions
from flwire.transport import TopicLayout

#: Seconds the broker waits before it aborts a transaction of a killed aggregator.
TRANSACTION_TIMEOUT_S = 5.0


def reference_state() -> dict[str, torch.Tensor]:
    """The round's global model: the old SimpleCNN (1.2M parameters, 4.8 MB of
    float32) and an integer counter."""
    torch.manual_seed(0)
    state = dict(SimpleCNN().state_dict())
    state["steps"] = torch.tensor(0, dtype=torch.int64)
    return state


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("job")
    parser.add_argument("aggregator_id")
    parser.add_argument("--hang-in-transaction", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    reference = reference_state()
    aggregator: Aggregator

    def hang() -> None:
        clients = sorted(c for fold in aggregator.intake.folds.values() for c in fold.counts)
        print("IN-TRANSACTION", " ".join(clients), flush=True)
        while True:
            time.sleep(1)

    aggregator = Aggregator(
        {"bootstrap.servers": args.bootstrap},
        TopicLayout(args.job),
        args.aggregator_id,
        lambda r: reference if r == 1 else None,
        transaction_timeout_s=TRANSACTION_TIMEOUT_S,
        commit_interval_s=1.0,
        options=EncodeOptions(compression="none"),
        before_commit=hang if args.hang_in_transaction else None,
    )
    aggregator.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
