"""``python -m fuzz`` (run from ``tests/``): fuzz for a while, replay a seed, or
reproduce a case file. See README.md."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .corpus import KINDS
from .plants import PLANTS
from .runner import Settings, reproduce, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    p.add_argument(
        "--seconds", type=float, default=float(os.environ.get("FLWIRE_FUZZ_SECONDS", 60))
    )
    p.add_argument(
        "--seed", type=int, default=None, help="first seed number (default: from the clock)"
    )
    p.add_argument("--count", type=int, default=None, help="stop after this many inputs")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where inputs are written (default: a temp dir)"
    )
    p.add_argument("--input-timeout", type=float, default=2.0, help="seconds one input may take")
    p.add_argument("--rss-cap-mb", type=int, default=64, help="peak RSS growth one input may cause")
    p.add_argument(
        "--kept-cap-mb", type=int, default=256, help="RSS the process may gain over the run"
    )
    p.add_argument(
        "--headroom-mb", type=int, default=1024, help="address space above the warmed-up process"
    )
    p.add_argument("--kind", choices=KINDS, action="append", help="only these kinds (repeatable)")
    p.add_argument("--keep-going", action="store_true", help="go on after a finding")
    p.add_argument("--plant", action="append", choices=PLANTS, help=argparse.SUPPRESS)
    p.add_argument(
        "--reproduce", type=Path, default=None, help="run one .case file and show the traceback"
    )
    args = p.parse_args(argv)
    if args.reproduce is not None:
        return reproduce(args.reproduce)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flwire-fuzz-"))
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % (1 << 40) * 1000
    return run(
        Settings(
            seconds=args.seconds,
            base_seed=seed,
            workdir=workdir,
            max_inputs=args.count,
            input_timeout=args.input_timeout,
            rss_cap_mb=args.rss_cap_mb,
            headroom_mb=args.headroom_mb,
            kept_cap_mb=args.kept_cap_mb,
            kinds=tuple(args.kind or KINDS),
            keep_going=args.keep_going,
            plants=args.plant or [],
        )
    )


if __name__ == "__main__":
    sys.exit(main())
