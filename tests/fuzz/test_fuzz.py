"""The mutation fuzzer (``python -m fuzz``) in the test suite: a short run in
``make test`` (``FLWIRE_FUZZ_SECONDS``, default 20 s of fuzzing plus about
7 s to start), longer with ``make fuzz``; and a check that the harness fails,
naming the input, on each kind of bug it is there to catch.

The fuzzer runs in a subprocess: its address space is capped, its watchdog may
end it, and a crash must not take pytest with it. A failure's message holds
the fuzzer's report: the seed, the input file and the command to reproduce it.
``FLWIRE_FUZZ_SEED`` replays a run (the default seed is random and printed).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from .runner import reproduce

TESTS = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("FLWIRE_FUZZ_SECONDS", "20"))
#: Time to import torch, build the seeds and warm up, on a loaded 2-core machine.
STARTUP = 60


def _fuzz(workdir: Path, seconds: float, seed: int, *extra: str) -> tuple[int, str]:
    """Run the fuzzer; (exit status, its output). A run that outlives its
    budget is killed (status None is reported as -9)."""
    command = [sys.executable, "-m", "fuzz", "--seconds", str(seconds), "--seed", str(seed)]
    command += ["--workdir", str(workdir), *extra]
    try:
        proc = subprocess.run(
            command,
            cwd=TESTS,
            capture_output=True,
            text=True,
            timeout=seconds + STARTUP,
        )
    except subprocess.TimeoutExpired as exc:
        out = (
            (exc.stdout or b"").decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
        return -9, out + f"\n(killed after {seconds + STARTUP:.0f} s)"
    return proc.returncode, proc.stdout + proc.stderr


def _summary(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("FUZZ-SUMMARY ")]
    assert lines, f"the fuzzer printed no summary:\n{output[-4000:]}"
    summary: dict = json.loads(lines[-1].removeprefix("FUZZ-SUMMARY "))
    return summary


def _tail(output: str, workdir: Path) -> str:
    current = workdir / "current.case"
    return (
        f"{output[-8000:]}\n(the input that was running when the fuzzer stopped, if it "
        f"stopped without a report: {current}; reproduce with: cd tests && "
        f"../.venv/bin/python -m fuzz --reproduce {current})"
    )


def test_decoders_keep_the_contract_under_mutation(tmp_path: Path) -> None:
    """Mutated tensor maps, envelopes and transfer parts: each public decoder
    returns valid data or raises an FLException, within 2 s and 64 MB each."""
    seed = int(os.environ.get("FLWIRE_FUZZ_SEED", random.randrange(1 << 40)))
    status, output = _fuzz(tmp_path, SECONDS, seed)
    assert status == 0, f"fuzz seed {seed} failed (exit {status}):\n{_tail(output, tmp_path)}"
    summary = _summary(output)
    print(f"fuzz seed {seed}: {json.dumps({k: v for k, v in summary.items() if k != 'steps'})}")
    assert summary["failures"] == 0
    assert summary["executions"] >= 20 * SECONDS, summary  # the loop ran (~400/s here)
    steps = summary["steps"]
    # The mutations reach past the first check: every decode path both accepts
    # and refuses inputs, and parts complete transfers.
    for step in (
        "decode_tensor_map(torch)",
        "decode_tensor_map(numpy)",
        "decode_message",
        "MessageSerializer.deserialize_message",
        "parse_part",
        "Reassembler.add",
    ):
        assert steps[step]["accepted"] > 0 and steps[step]["refused"] > 0, (step, steps[step])
    assert steps["reassembled decode_message"]["accepted"] > 0


def test_the_harness_catches_planted_bugs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decoder that raises a foreign exception, holds 256 MB, asks for 4 GiB
    or sleeps: each is reported with its seed, its input file and the command
    to reproduce it (the bugs are planted in this run only: plants.py)."""
    plants = ["--plant", "raise", "--plant", "grow", "--plant", "alloc", "--plant", "sleep"]
    status, output = _fuzz(tmp_path, 60, 1, "--kind", "tensor_map", "--keep-going", *plants)
    assert status == 3, output[-8000:]  # the watchdog ended it: the sleep comes last
    reports = output.split("\nFUZZ ")[1:]
    assert len(reports) == 4, output[-8000:]
    expected = [
        ("FAILURE", "read_tensor_map: raised ValueError: planted bug"),
        ("FAILURE", "peak RSS grew by 25"),  # 256 MB, give or take the allocator
        ("FAILURE", "raised MemoryError"),
        ("HANG", "bound 2.0 s; stacks follow"),
    ]
    for report, (kind, words) in zip(reports, expected, strict=True):
        assert report.startswith(kind) and words in report, report
        path = Path(report.split("\ninput: ")[1].split("\n")[0])
        assert path.is_file() and path.read_bytes().startswith(b"FLWIRE-FUZZ 1\n")
        assert f"--reproduce {path}" in report
    # The hang's report comes with every thread's stack, the planted sleep on top.
    assert "in _misbehave" in output.split("FUZZ HANG")[1]
    # A case file replays on its own; without the plant, the input is fine.
    path = Path(reports[0].split("\ninput: ")[1].split("\n")[0])
    assert reproduce(path) == 0
    assert "ok in" in capsys.readouterr().out
