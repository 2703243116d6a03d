"""The fuzz loop, with its bounds: a watchdog on each input's time, a cap on
each input's peak RSS growth and on the process's address space; every input
written to a file before it runs, so that a hang or a crash leaves it behind.

Exit status: 0 when every input kept the contract; :data:`FAILED` for a
finding (a foreign exception, a broken invariant, memory over the cap);
:data:`HUNG` when an input ran past its time bound; any other status (a crash,
faulthandler's backstop) leaves the input in ``current.case``.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import random
import resource
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import corpus, plants, targets
from .mutate import mutate_stack

FAILED, HUNG = 1, 3
MAGIC = b"FLWIRE-FUZZ 1\n"
#: How often each kind is drawn.
WEIGHTS = {corpus.TENSOR_MAP: 4, corpus.ENVELOPE: 4, corpus.TRANSFER: 3}


@dataclass
class Case:
    """One input: its seed number, kind, where it came from and its records."""

    seed: int
    kind: str
    origin: str
    mutations: list[str]
    records: list[bytes]
    expect: dict[str, Any] | None = field(default=None, repr=False)

    def encode(self, digest: str) -> bytes:
        head = {
            "seed": self.seed,
            "kind": self.kind,
            "origin": self.origin,
            "corpus": digest,
            "mutations": self.mutations,
        }
        out = [MAGIC, json.dumps(head).encode(), b"\n"]
        for record in self.records:
            out += [len(record).to_bytes(4, "little"), record]
        return b"".join(out)


def read_case(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    """The header and records of a ``.case`` file."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a fuzz case file")
    end = data.index(b"\n", len(MAGIC))
    head: dict[str, Any] = json.loads(data[len(MAGIC) : end])
    records, pos = [], end + 1
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "little")
        records.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return head, records


# ----------------------------------------------------------------------------- inputs


class Generator:
    """Inputs from seed numbers: the same number gives the same input."""

    def __init__(self, seeds: list[corpus.Seed]) -> None:
        self.by_kind = {k: [s for s in seeds if s.kind == k] for k in corpus.KINDS}
        self.donors = [s.records[0] for s in seeds if s.kind != corpus.TRANSFER]
        self.parts = [r for s in self.by_kind[corpus.TRANSFER] for r in s.records]

    def case(self, number: int, kinds: tuple[str, ...] = corpus.KINDS) -> Case:
        rng = random.Random(number)
        kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
        seeds = self.by_kind[kind]
        refusals = [s for s in seeds if s.name.startswith("refusal-")]
        if refusals and rng.random() >= 0.25:  # most inputs from valid seeds
            seeds = [s for s in seeds if not s.name.startswith("refusal-")]
        seed = rng.choice(seeds if seeds else refusals)
        if kind != corpus.TRANSFER:
            data, steps = mutate_stack(rng, seed.records[0], self.donors)
            return Case(number, kind, seed.name, steps, [data], seed.expect)
        records, steps = self._parts(rng, list(seed.records))
        return Case(number, kind, seed.name, steps, records)

    def _parts(self, rng: random.Random, records: list[bytes]) -> tuple[list[bytes], list[str]]:
        """Sequence-level edits of a transfer's parts, and mutations of some parts."""
        steps = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.randrange(8)
            i = rng.randrange(len(records)) if records else 0
            if op <= 2 and records:  # mutate a part (kept in place)
                records[i], what = mutate_stack(rng, records[i], self.parts + self.donors)
                steps.append(f"part {i}: {what}")
            elif op == 3 and records:  # a forged copy next to the real part
                forged, what = mutate_stack(rng, records[i], self.parts)
                records.insert(rng.randrange(len(records) + 1), forged)
                steps.append(f"forged copy of part {i}: {what}")
            elif op == 4 and records:
                times = rng.choice((1, 1, 5, 50))
                at = rng.randrange(len(records) + 1)
                records[at:at] = [records[i]] * times
                steps.append(f"part {i} duplicated x{times}@{at}")
            elif op == 5 and records:
                del records[i]
                steps.append(f"part {i} deleted")
            elif op == 6:
                rng.shuffle(records)
                steps.append("parts shuffled")
            else:  # interleave (some of) another transfer's parts
                other = rng.choice(self.by_kind[corpus.TRANSFER]).records
                take = other[: rng.randint(1, len(other))]
                for part in take:
                    records.insert(rng.randrange(len(records) + 1), part)
                steps.append(f"{len(take)} parts of another transfer interleaved")
        return records[:200], steps


# ----------------------------------------------------------------------------- bounds


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


class Memory:
    """Peak RSS growth of one input: VmHWM is reset (``/proc/self/clear_refs``)
    before it and read after it. Also caps the address space at ``headroom``
    above what the warmed-up process has mapped, so that a runaway allocation
    fails (MemoryError, a Finding) rather than taking the machine."""

    def __init__(self, cap_mb: int, headroom_mb: int) -> None:
        self.cap_kb = cap_mb << 10
        self._reset = os.open("/proc/self/clear_refs", os.O_WRONLY)
        mapped = _status_kb("VmSize:") << 10
        limit = mapped + (headroom_mb << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        self.limit_mb = limit >> 20
        self.worst_kb = 0
        self.worst_seed = -1

    def start(self) -> int:
        os.write(self._reset, b"5")
        return _status_kb("VmRSS:")

    def grown_kb(self, before: int, seed: int) -> int:
        grown = _status_kb("VmHWM:") - before
        if grown > self.worst_kb:
            self.worst_kb, self.worst_seed = grown, seed
        return grown


class Watchdog:
    """Ends the process when one input runs longer than ``bound`` seconds: prints
    the seed and the input's file, dumps every thread's stack, exits
    :data:`HUNG`. A Python thread checks every 50 ms; it also re-arms
    faulthandler's C-level timer, which fires (stacks, exit 1) should the input
    hold the GIL so long that the thread cannot run."""

    def __init__(self, bound: float, on_hang: Any) -> None:
        self.bound = bound
        self.on_hang = on_hang
        self.started: float | None = None
        self.seed = -1
        threading.Thread(target=self._watch, name="fuzz-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while True:
            faulthandler.dump_traceback_later(self.bound + 2.0, exit=True)
            time.sleep(0.05)
            started = self.started
            if started is not None and time.monotonic() - started > self.bound:
                self.on_hang(self.seed, time.monotonic() - started)
                faulthandler.dump_traceback(all_threads=True)
                sys.stdout.flush()
                os._exit(HUNG)


# ----------------------------------------------------------------------------- the loop


@dataclass
class Settings:
    seconds: float
    base_seed: int
    workdir: Path
    max_inputs: int | None = None
    input_timeout: float = 2.0
    rss_cap_mb: int = 64
    #: RSS the process may gain over the whole run.
    kept_cap_mb: int = 256
    headroom_mb: int = 1024
    kinds: tuple[str, ...] = corpus.KINDS
    keep_going: bool = False
    #: Bugs to plant (the harness's own test: see plants.py).
    plants: list[str] = field(default_factory=list)


def warm_up(seeds: list[corpus.Seed]) -> None:
    """Run every seed once (and a map big enough to start the decoder's threads),
    so that lazy imports, caches and thread pools exist before memory is measured."""
    import numpy as np

    from flwire.tensors import encode_tensor_map

    stats = targets.Stats()
    for seed in seeds:
        targets.TARGETS[seed.kind](seed.records, seed.expect, stats)
    big = encode_tensor_map({"w": np.zeros(1 << 20, np.float32)})
    targets.tensor_map([big], None, stats)


def reproduce_command(path: Path) -> str:
    return f"cd tests && ../.venv/bin/python -m fuzz --reproduce {path}"


def report(kind: str, case: Case, path: Path, detail: str) -> None:
    print(
        f"\nFUZZ {kind}: seed {case.seed} ({case.kind}, from seed input {case.origin!r}, "
        f"mutations {case.mutations})\n{detail}\ninput: {path}\nreproduce: "
        f"{reproduce_command(path)}\n",
        flush=True,
    )


def run(settings: Settings) -> int:
    faulthandler.enable()
    # The reassembler logs each transfer it gives up on: thousands of lines here.
    logging.getLogger("flwire").setLevel(logging.CRITICAL)
    workdir = settings.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = corpus.build()
    digest = corpus.digest(seeds)
    warm_up(seeds)
    if settings.plants:
        plants.install(settings.plants)
    gen = Generator(seeds)
    current = workdir / "current.case"
    fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    memory = Memory(settings.rss_cap_mb, settings.headroom_mb)
    start_kb = _status_kb("VmRSS:")
    stats = targets.Stats()
    holder: dict[str, Case] = {}

    def saved(case: Case) -> Path:
        path = workdir / f"{case.kind}-{case.seed}.case"
        shutil.copyfile(current, path)
        return path

    def on_hang(seed: int, seconds: float) -> None:
        case = holder["case"]
        report(
            "HANG",
            case,
            saved(case),
            f"ran {seconds:.1f} s, bound {settings.input_timeout} s; stacks follow",
        )

    watchdog = Watchdog(settings.input_timeout, on_hang)
    print(
        f"fuzz: seed {settings.base_seed}, {settings.seconds:.0f} s, corpus {digest} "
        f"({len(seeds)} seeds), per input <= {settings.input_timeout} s and "
        f"<= {settings.rss_cap_mb} MB peak RSS growth, address space <= {memory.limit_mb} MB, "
        f"workdir {workdir}",
        flush=True,
    )
    failures = executions = 0
    slowest = (0.0, -1)
    started = time.monotonic()
    deadline = started + settings.seconds
    while time.monotonic() < deadline:
        if settings.max_inputs is not None and executions >= settings.max_inputs:
            break
        case = gen.case(settings.base_seed + executions, settings.kinds)
        holder["case"] = case
        blob = case.encode(digest)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, blob)
        os.ftruncate(fd, len(blob))
        executions += 1
        before = memory.start()
        t0 = watchdog.started = time.monotonic()
        watchdog.seed = case.seed
        problem = None
        try:
            targets.TARGETS[case.kind](case.records, case.expect, stats)
        except targets.Finding as finding:
            cause = finding.__cause__
            trace = "".join(traceback.format_exception(cause)) if cause else ""
            problem = f"{finding}\n{trace}"
        except BaseException as exc:  # the harness itself, or an escape from a check
            problem = "".join(traceback.format_exception(exc))
        watchdog.started = None
        took = time.monotonic() - t0
        slowest = max(slowest, (took, case.seed))
        grown = memory.grown_kb(before, case.seed)
        if problem is None and grown > memory.cap_kb:
            problem = f"peak RSS grew by {grown >> 10} MB (cap {settings.rss_cap_mb} MB)"
        if problem is not None:
            failures += 1
            report("FAILURE", case, saved(case), problem)
            if not settings.keep_going:
                break
    elapsed = time.monotonic() - started
    # Memory kept across inputs (a cache keyed by what arrived, a leak) shows
    # only over the whole run.
    kept_mb = (_status_kb("VmRSS:") - start_kb) >> 10
    if kept_mb > settings.kept_cap_mb:
        failures += 1
        print(
            f"\nFUZZ FAILURE: the process kept {kept_mb} MB more after {executions} inputs "
            f"than before them (cap {settings.kept_cap_mb} MB): a leak or an unbounded cache\n",
            flush=True,
        )
    summary = {
        "executions": executions,
        "failures": failures,
        "seconds": round(elapsed, 1),
        "per_second": round(executions / elapsed, 1) if elapsed else 0,
        "slowest_input_s": round(slowest[0], 3),
        "slowest_seed": slowest[1],
        "max_rss_growth_mb": round(memory.worst_kb / 1024, 1),
        "max_rss_growth_seed": memory.worst_seed,
        "rss_kept_mb": kept_mb,
        "steps": {k: {"accepted": a, "refused": r} for k, (a, r) in sorted(stats.counts.items())},
    }
    print("FUZZ-SUMMARY " + json.dumps(summary), flush=True)
    return FAILED if failures else 0


def reproduce(path: Path) -> int:
    """Run one case file through its target, with the traceback of any finding."""
    head, records = read_case(path)
    seeds = corpus.build()
    digest = corpus.digest(seeds)
    if head.get("corpus") != digest:
        print(f"note: the corpus changed since this case was written ({head.get('corpus')})")
    origin = next((s for s in seeds if s.name == head["origin"] and s.kind == head["kind"]), None)
    print(f"case: seed {head['seed']}, {head['kind']} from {head['origin']!r}")
    print(f"mutations: {head['mutations']}")
    stats = targets.Stats()
    t0 = time.monotonic()
    try:
        targets.TARGETS[head["kind"]](records, origin.expect if origin else None, stats)
    except targets.Finding as finding:
        traceback.print_exception(finding.__cause__ or finding)
        print(f"FINDING: {finding}")
        return FAILED
    print(f"ok in {time.monotonic() - t0:.3f} s: " + json.dumps(stats.counts))
    return 0
