"""Run the fault scenarios N times each on a private broker and print a table.

    python -m tests.integration.faults --runs N [--scenario NAME ...]
        [--runs-for NAME=N ...] [--port P] [--json FILE] [--workdir DIR]

Each scenario gets a fresh private cluster on ``--port`` (kafka/broker.sh with
FLWIRE_KAFKA_PORT; reset before and after), shared by its iterations. The table
counts each verdict per scenario, with the median seconds of an iteration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import flwire

from .common import VERDICTS, Outcome, ScriptBroker, features
from .scenarios import SCENARIOS, Context, run


def table(outcomes: Sequence[Outcome], names: Sequence[str]) -> str:
    head = ["scenario", "runs", *VERDICTS, "median s"]
    rows = [head]
    for name in names:
        mine = [o for o in outcomes if o.scenario == name]
        if not mine:
            continue
        counts = [str(sum(1 for o in mine if o.verdict == v)) for v in VERDICTS]
        median = statistics.median(o.seconds for o in mine)
        rows.append([name, str(len(mine)), *counts, f"{median:.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.faults")
    parser.add_argument("--runs", type=int, default=1, help="iterations of each scenario")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), default=[])
    parser.add_argument(
        "--runs-for",
        action="append",
        default=[],
        metavar="NAME=N",
        help="iterations of one scenario (overrides --runs)",
    )
    parser.add_argument("--port", type=int, default=19092, help="private broker port")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    parser.add_argument("--workdir", type=Path, help="processes' files (default: a temp dir)")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    runs = dict.fromkeys(names, args.runs)
    for item in args.runs_for:
        key, _, value = item.partition("=")
        if key not in SCENARIOS:
            parser.error(f"--runs-for: unknown scenario {key!r}")
        runs[key] = int(value)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flwire-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    feats = features()
    print(
        f"flwire {flwire.__file__}: {feats.describe()}; broker port {args.port}; "
        f"files in {workdir}",
        flush=True,
    )
    broker = ScriptBroker(args.port)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for name in names:
        broker.reset()
        broker.up()
        try:
            for i in range(runs[name]):
                where = workdir / f"{name}-{i}"
                where.mkdir(parents=True, exist_ok=True)
                outcome = run(name, Context(broker, where, i))
                outcomes.append(outcome)
                print(f"[{i + 1}/{runs[name]}] {outcome.line()}", flush=True)
                if outcome.verdict != "exactly_once" and outcome.logs:
                    (where / "outcome.log").write_text(outcome.logs)
        finally:
            broker.reset()
    total = time.monotonic() - started
    print()
    print(table(outcomes, names))
    print(f"\n{len(outcomes)} iterations in {total:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "flwire": flwire.__file__,
                    "features": feats.describe(),
                    "port": args.port,
                    "seconds": round(total, 1),
                    "outcomes": [o.to_json() for o in outcomes],
                },
                indent=1,
            )
        )
    return 0 if all(o.verdict == "exactly_once" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
