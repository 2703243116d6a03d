"""The `flwire` command: demo, aggregator, inspect, keys, --version."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from flwire import _optional
from flwire.exceptions import MissingDependencyError

#: --min-clients when not given (fewer when --clients is fewer).
_DEFAULT_MIN_CLIENTS = 2


def _version() -> str:
    from flwire._version import __version__

    return __version__


#: The largest --seed: numpy's and torch's generators take it, and each client's seed
#: (seed + index, and seed * 1000 + round for its training) stays far inside their range.
_MAX_SEED = 2**32 - 1


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` (to ``high``), or a usage error
    naming the value and the range."""

    def parse(text: str) -> int:
        expected = "a whole number" + _range(low, high)
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}: expected {expected}"
            ) from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"invalid value {value}: expected {expected}")
        return value

    return parse


def _range(low: int, high: int | None) -> str:
    return f" from {low} to {high}" if high is not None else f", {low} or more"


def _finite(low: float, *, above: bool) -> Callable[[str], float]:
    """An argparse ``type``: a finite number above ``low`` (``above``) or from ``low`` on
    (not NaN, not infinite), or a usage error naming the value and the range."""
    expected = f"a finite number above {low:g}" if above else f"a finite number, {low:g} or more"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}: expected {expected}"
            ) from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"invalid value {text}: expected {expected}")
        return value

    return parse


def _check_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What the flags' types cannot check alone (flags that bound each other), and the
    optional packages the run will need: a usage error (exit status 2), or a
    MissingDependencyError, before anything starts."""
    if args.min_clients is None:
        args.min_clients = min(_DEFAULT_MIN_CLIENTS, args.clients)
    for flag, value, low in (
        ("--min-clients", args.min_clients, 1),
        ("--stragglers", args.stragglers, 0),
    ):
        if not low <= value <= args.clients:
            parser.error(
                f"argument {flag}: invalid value {value}: expected a whole number from "
                f"{low} to --clients ({args.clients})"
            )
    # --report needs matplotlib for its plot, the demo torch: found now, not after the
    # training (require raises MissingDependencyError, naming the pip extra to install).
    if args.report:
        _optional.require("matplotlib", extra="demo")
    _optional.require("torch", extra="demo")  # the demo extra brings torch too


def _demo(args: argparse.Namespace) -> int:
    _check_demo(args.demo_parser, args)
    from flwire.demo.runner import DemoOptions, run_demo

    if args.secure and not args.bootstrap_servers:
        port = os.environ.get("FLWIRE_KAFKA_SECURE_PORT", "9094")
        args.bootstrap_servers = f"127.0.0.1:{port}"
    opts = DemoOptions(
        clients=args.clients,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        learning_rate=args.learning_rate,
        min_clients=args.min_clients,
        max_wait_time=args.max_wait_time,
        stragglers=args.stragglers,
        straggler_delay=args.straggler_delay,
        bootstrap_servers=args.bootstrap_servers,
        report_dir=Path(args.report) if args.report else None,
        seed=args.seed,
        sign=args.sign or args.secure,
        secure=args.secure,
        stream=args.stream,
        kafka_home=Path(args.kafka_home) if args.kafka_home else None,
    )
    return run_demo(opts)


def _inspect(args: argparse.Namespace) -> int:
    from flwire.inspect_cmd import inspect_bytes

    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            print(f"flwire inspect: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
    return inspect_bytes(data, sys.stdout)


def _keys_generate(args: argparse.Namespace) -> int:
    from flwire.exceptions import ConfigurationException
    from flwire.security import generate_private_key, public_key_base64, write_key_pair

    try:
        key = generate_private_key()
        private, public = write_key_pair(args.id, key, Path(args.out))
    except ConfigurationException as exc:
        print(f"flwire keys generate: {exc}", file=sys.stderr)
        return 1
    print(f"private key: {private} (keep it secret; mode 0600)")
    print(f"public key:  {public}")
    print(f"trust store line: {args.id},{public_key_base64(key.public_key())}")
    return 0


#: What a job id, aggregator id or topic prefix may hold: Kafka's topic name characters.
_TOPIC_PART = re.compile(r"[A-Za-z0-9._-]+")
#: flwire.messages.SERVER_ID, the id flwire's server sends and signs as (not imported:
#: the command line starts without the messages package; a test holds the two equal).
_SERVER_ID = "server"
#: flwire.aggregation.screening.UpdatePolicy's max_num_examples default (not imported:
#: the command line starts without torch; a test holds the two equal).
_MAX_NUM_EXAMPLES = 1_000_000
#: flwire.transport.chunking.MAX_MEMORY_BYTES, the Reassembler's default (not imported:
#: the command line starts without numpy; a test holds the two equal).
_MAX_MEMORY_BYTES = 1 << 30


def _aggregator(args: argparse.Namespace) -> int:
    from flwire.aggregation.service import AggregatorOptions, run_aggregator

    if args.models_wait <= 0:
        print("flwire aggregator: --models-wait must be above 0", file=sys.stderr)
        return 2
    if args.max_memory_mb < 0:
        print("flwire aggregator: --max-memory-mb must be 0 or above", file=sys.stderr)
        return 2
    if args.max_num_examples < 1:
        print("flwire aggregator: --max-num-examples must be 1 or above", file=sys.stderr)
        return 2
    if any(not server_id for server_id in args.server_id or []):
        print("flwire aggregator: --server-id must not be empty", file=sys.stderr)
        return 2
    for flag, value in (("--job", args.job), ("--id", args.id), ("--prefix", args.prefix)):
        if not _TOPIC_PART.fullmatch(value):
            print(
                f"flwire aggregator: {flag} {value!r} cannot name Kafka topics and groups: "
                "use letters, digits, '.', '_' and '-' (at least one)",
                file=sys.stderr,
            )
            return 2
    opts = AggregatorOptions(
        bootstrap_servers=args.bootstrap_servers,
        job_id=args.job,
        aggregator_id=args.id,
        prefix=args.prefix,
        trust=Path(args.trust) if args.trust else None,
        server_ids=tuple(args.server_id or [_SERVER_ID]),
        models_wait_s=args.models_wait,
        max_memory_bytes=int(args.max_memory_mb * 1_000_000),
        spill_dir=args.spill_dir,
        max_num_examples=args.max_num_examples,
    )
    return run_aggregator(opts, sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flwire",
        description="flwire: the schema-first wire layer for federated learning.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a federated learning job (FedAvg, SimpleCNN, digits)",
        description="Train SimpleCNN with FedAvg on non-IID handwritten digits "
        "over flwire: in memory by default, or over Kafka.",
    )
    demo.add_argument(
        "--clients", type=_whole(1), default=4, help="number of clients, 1 or more (default 4)"
    )
    demo.add_argument(
        "--rounds", type=_whole(1), default=5, help="training rounds, 1 or more (default 5)"
    )
    demo.add_argument(
        "--local-epochs",
        type=_whole(1),
        default=3,
        help="epochs per round, 1 or more (default 3)",
    )
    demo.add_argument(
        "--learning-rate",
        type=_finite(0, above=True),
        default=0.005,
        help="client SGD learning rate, above 0 (default 0.005)",
    )
    demo.add_argument(
        "--min-clients",
        type=_whole(1),
        default=None,
        help="fewest updates to aggregate after --max-wait-time, from 1 to --clients; a "
        f"round also fails as soon as fewer clients are left running (default "
        f"{_DEFAULT_MIN_CLIENTS}, or --clients when fewer)",
    )
    demo.add_argument(
        "--max-wait-time",
        type=_finite(0, above=True),
        default=300.0,
        metavar="SECONDS",
        help="seconds to wait for every client's update, above 0 (default 300)",
    )
    demo.add_argument(
        "--stragglers",
        type=_whole(0),
        default=0,
        help="make this many clients slow, to show partial aggregation (0 to --clients)",
    )
    demo.add_argument(
        "--straggler-delay",
        type=_finite(0, above=False),
        default=0.0,
        metavar="SECONDS",
        help="seconds a straggler waits before sending its update, 0 or more",
    )
    demo.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="run over Kafka at HOST:PORT, clients as separate processes",
    )
    demo.add_argument("--report", metavar="DIR", help="write demo-report.json and .png to DIR")
    demo.add_argument(
        "--seed",
        type=_whole(0, _MAX_SEED),
        default=0,
        help=f"seed of the data split and the training, 0 to {_MAX_SEED} (default 0)",
    )
    demo.add_argument(
        "--sign",
        action="store_true",
        help="sign every message with keys made for the run; refuse what is not signed "
        "(needs flwire[sign])",
    )
    demo.add_argument(
        "--stream",
        action="store_true",
        help="clients send their updates as streamed transfers (EncodeOptions(stream=True)): "
        "the first record leaves at once, the server decodes each as it arrives",
    )
    demo.add_argument(
        "--secure",
        action="store_true",
        help="run over the secured broker of `kafka/broker.sh up --secure` (SASL_SSL, "
        "SCRAM users and ACLs made for the job) with signed messages; --bootstrap-servers "
        "defaults to 127.0.0.1:9094 ($FLWIRE_KAFKA_SECURE_PORT)",
    )
    demo.add_argument(
        "--kafka-home",
        metavar="DIR",
        help="kafka/broker.sh's folder, whose secure/ holds the CA and passwords "
        "(default $FLWIRE_KAFKA_HOME, else ~/.cache/flwire/kafka)",
    )
    demo.set_defaults(func=_demo, demo_parser=demo)

    inspect = sub.add_parser(
        "inspect",
        help="describe a flwire message or tensor map file",
        description="Decode any flwire message (Envelope) or TensorMap and "
        "print its type, ids and tensors, verifying every checksum.",
    )
    inspect.add_argument("file", help="file to read, or - for standard input")
    inspect.set_defaults(func=_inspect)

    aggregator = sub.add_parser(
        "aggregator",
        help="run one scale-out aggregator of a job (needs flwire[kafka,torch])",
        description="Fold the client updates of this process's share of the job's updates "
        "topic into partial aggregates, committed with their offsets in Kafka "
        "transactions; the global model of each round is read from the job's broadcast "
        "topic. Run as many as the updates topic has partitions; the server combines "
        "the partials (flwire.aggregation.scaleout.Coordinator). Stops on Ctrl-C or "
        "SIGTERM, after committing what it folded.",
    )
    aggregator.add_argument(
        "--bootstrap-servers", required=True, metavar="HOST:PORT", help="the Kafka broker(s)"
    )
    aggregator.add_argument("--job", required=True, help="the job id (topics flwire.JOB.*)")
    aggregator.add_argument("--id", required=True, help="this aggregator's id (unique per job)")
    aggregator.add_argument("--prefix", default="flwire", help="topic prefix (default flwire)")
    aggregator.add_argument(
        "--trust",
        metavar="PATH",
        help="trust store (a directory of ID.pub files or an 'id,public_key' CSV) with the "
        "clients' and the server's keys: unsigned or badly signed updates and global "
        "models are refused",
    )
    aggregator.add_argument(
        "--server-id",
        action="append",
        metavar="ID",
        help="the server's key id (its sender id): global models are taken from it alone, "
        "never from a client's key of the trust store (repeat for several; default "
        f"{_SERVER_ID}, the id flwire's server signs as)",
    )
    aggregator.add_argument(
        "--models-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long an update waits for its round's global model to be read from the "
        "broadcast topic before it is refused (default 30)",
    )
    aggregator.add_argument(
        "--max-memory-mb",
        type=float,
        default=_MAX_MEMORY_BYTES / 1_000_000,
        metavar="MB",
        help="incomplete updates (their 1 MB parts interleaved from many clients) kept in "
        "memory; past it, parts wait in a spill file until their update is complete "
        f"(default {_MAX_MEMORY_BYTES / 1_000_000:g})",
    )
    aggregator.add_argument(
        "--max-num-examples",
        type=int,
        default=_MAX_NUM_EXAMPLES,
        metavar="N",
        help="the largest num_examples an update may claim (its weight in the average); "
        "an update claiming more is refused, logged and counted (default "
        f"{_MAX_NUM_EXAMPLES:,}: raise it for sites with more examples)",
    )
    aggregator.add_argument(
        "--spill-dir",
        metavar="DIR",
        help="where the spill file goes (default: the system's temporary directory)",
    )
    aggregator.set_defaults(func=_aggregator)

    keys = sub.add_parser(
        "keys",
        help="manage the Ed25519 keys that sign messages",
        description="Generate the key pairs that sign flwire messages (needs flwire[sign]).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = keys_sub.add_parser(
        "generate",
        help="write a new key pair: DIR/ID.key (private, mode 0600) and DIR/ID.pub",
        description="Write a new Ed25519 key pair: OUT/ID.key (PKCS#8 PEM, mode 0600) and "
        "OUT/ID.pub (PEM), never overwriting either, and print the key's line for a "
        "trust store CSV. A trust store is a directory of ID.pub files or a CSV of "
        "'id,public_key' lines.",
    )
    generate.add_argument("--id", required=True, help="the key id: the sender id it signs for")
    generate.add_argument("--out", required=True, metavar="DIR", help="directory to write to")
    generate.set_defaults(func=_keys_generate)

    for command in [*sub.choices.values(), *keys_sub.choices.values()]:
        command.add_argument(
            "--version", action="version", version=f"flwire {_version()}", help="print the version"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except MissingDependencyError as exc:
        print(f"flwire {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
