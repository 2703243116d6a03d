"""``flwire aggregator``: one scale-out aggregator process of a job, fed the
global models from the job's broadcast topic (:class:`BroadcastModels`),
until Ctrl-C or SIGTERM. Start as many as the updates topic has partitions;
the server combines their partials with a
:class:`~flwire.aggregation.scaleout.Coordinator`.

With a trust store that holds the clients' keys and the server's, a global
model is taken only when the server signed it: its key id must be one of
``server_ids`` (``--server-id``; default ``"server"``, the id flwire's server
signs as), so that a client's own trusted key cannot sign a "global model"
that the updates would then be added to."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from flwire import _optional

# Named with its extra when missing (the command then prints that, not a
# traceback); torch is required by the package itself.
_optional.require("confluent_kafka")

from flwire.aggregation.aggregator import Aggregator  # noqa: E402
from flwire.aggregation.models import DEFAULT_WAIT_S, BroadcastModels  # noqa: E402
from flwire.aggregation.screening import UpdatePolicy  # noqa: E402
from flwire.exceptions import CommunicationException, ConfigurationException  # noqa: E402
from flwire.messages import SERVER_ID  # noqa: E402
from flwire.security.trust import TrustStore, load_trust_store  # noqa: E402
from flwire.security.verifier import Verifier  # noqa: E402
from flwire.transport.chunking import MAX_MEMORY_BYTES  # noqa: E402
from flwire.transport.layout import TopicLayout  # noqa: E402


@dataclass(frozen=True)
class AggregatorOptions:
    """What ``flwire aggregator`` is given."""

    bootstrap_servers: str
    job_id: str
    aggregator_id: str
    prefix: str = "flwire"
    #: A trust store (a directory of ID.pub files or an 'id,public_key' CSV)
    #: holding the clients' and the server's keys: updates and global models
    #: must then be signed by them. None: nothing is verified.
    trust: Path | None = None
    #: The key ids (sender ids) of the server: the only senders whose global
    #: models are taken. Must be in ``trust`` when there is one.
    server_ids: tuple[str, ...] = (SERVER_ID,)
    models_wait_s: float = DEFAULT_WAIT_S
    #: The largest ``num_examples`` an update may claim (UpdatePolicy).
    max_num_examples: int = UpdatePolicy.max_num_examples
    commit_interval_s: float = 0.5
    #: Data of incomplete updates kept in memory; past it their parts wait in a
    #: spill file in ``spill_dir`` (None: the system's temporary directory).
    max_memory_bytes: int | None = MAX_MEMORY_BYTES
    spill_dir: str | None = None


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop`` (the aggregator commits and leaves)."""
    previous = {
        sig: signal.signal(sig, lambda _s, _f: stop.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _parts(opts: AggregatorOptions, out: TextIO) -> tuple[TopicLayout, BroadcastModels, Aggregator]:
    """The job's topics, the global models feed and the aggregator, unstarted;
    raises ConfigurationException (the trust store) or ValueError (a setting
    they refuse)."""
    trust = load_trust_store(opts.trust) if opts.trust is not None else None
    if trust is not None:
        _check_server_ids(trust, opts)
    layout = TopicLayout(opts.job_id, opts.prefix)
    config = {"bootstrap.servers": opts.bootstrap_servers}
    name = opts.aggregator_id
    models = BroadcastModels(
        config,
        layout,
        verifier=_models_verifier(trust, opts.server_ids, name) if trust else None,
        server_ids=opts.server_ids,
        wait_s=opts.models_wait_s,
        name=name,
    )

    def folded(round_id: int, client: str) -> None:
        print(f"{name}: round {round_id}: folded the update of {client}", file=out, flush=True)

    aggregator = Aggregator(
        config,
        layout,
        name,
        models,
        verifier=Verifier(trust, name=name) if trust else None,
        commit_interval_s=opts.commit_interval_s,
        on_fold=folded,
        policy=UpdatePolicy(max_num_examples=opts.max_num_examples),
        max_memory_bytes=opts.max_memory_bytes,
        spill_dir=opts.spill_dir,
    )
    return layout, models, aggregator


def _models_verifier(trust: TrustStore, server_ids: tuple[str, ...], name: str) -> Verifier:
    """The verifier of the global models: the trust store holds the clients'
    keys too, so a global model must be signed by a server's key. Global models
    are read from the topic's start, possibly long after they were sent: their
    signature counts, not their age."""
    return Verifier(
        trust,
        timestamp_window_s=None,
        senders={"global_update": server_ids},
        name=f"{name} (global models)",
    )


def _check_server_ids(trust: TrustStore, opts: AggregatorOptions) -> None:
    """A ConfigurationException when no server id has a key in ``trust``: every
    global model would be refused."""
    if not any(server_id in trust for server_id in opts.server_ids):
        raise ConfigurationException(
            f"the trust store {opts.trust} holds no key of the server "
            f"({', '.join(map(repr, opts.server_ids))}): every global model would be "
            "refused; add the server's public key (<id>.pub, or a line of the CSV) or "
            "name the server's key id with --server-id"
        )


def run_aggregator(
    opts: AggregatorOptions, out: TextIO, stop: threading.Event | None = None
) -> int:
    """Run until ``stop`` is set (or a signal comes); the exit status."""
    try:
        layout, models, aggregator = _parts(opts, out)
    except (ConfigurationException, ValueError) as exc:  # a setting refused
        print(f"flwire aggregator: {exc}", file=sys.stderr)
        return 2
    name = opts.aggregator_id
    stop = stop or threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    models.start()
    try:
        with _stopped_by_signals(stop) if in_main else contextlib.nullcontext():
            # Said once Ctrl-C and SIGTERM stop it cleanly (a supervisor may wait
            # for this line).
            print(
                f"{name}: folding {layout.updates} into {layout.aggregates}, global "
                f"models from {layout.broadcast} (Ctrl-C to stop)",
                file=out,
                flush=True,
            )
            aggregator.run(stop)
    except CommunicationException as exc:
        print(f"{name}: stopped: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        models.close()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(aggregator.stats.items()) if v) or "nothing"
    print(f"{name}: stopped ({counts})", file=out, flush=True)
    return 0
