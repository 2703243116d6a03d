"""`flwire demo`'s flags are checked before anything starts (a usage error, exit status 2,
one line naming the flag, the value and the range), its optional packages too, and a run
whose clients fail ends at once with one line that says what failed."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import time
from typing import Any

import pytest

from flwire import cli
from flwire.cli import build_parser, main
from flwire.demo import client as demo_client
from flwire.demo import runner


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of ``flwire demo ARGV``, which must be a usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["demo", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage: flwire demo"), err
    return lines[-1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--learning-rate", "-1"],
            "--learning-rate: invalid value -1: expected a finite number above 0",
        ),
        (
            ["--learning-rate", "0"],
            "--learning-rate: invalid value 0: expected a finite number above 0",
        ),
        (["--learning-rate", "nan"], "--learning-rate: invalid value nan: expected a finite"),
        (["--learning-rate", "inf"], "--learning-rate: invalid value inf: expected a finite"),
        (["--learning-rate", "fast"], "--learning-rate: invalid value 'fast': expected a finite"),
        (
            ["--max-wait-time", "-5"],
            "--max-wait-time: invalid value -5: expected a finite number above 0",
        ),
        (["--max-wait-time", "0"], "--max-wait-time: invalid value 0: expected a finite number"),
        (
            ["--local-epochs", "0"],
            "--local-epochs: invalid value 0: expected a whole number, 1 or more",
        ),
        (["--rounds", "0"], "--rounds: invalid value 0: expected a whole number, 1 or more"),
        (["--rounds", "1.5"], "--rounds: invalid value '1.5': expected a whole number, 1 or more"),
        (["--clients", "0"], "--clients: invalid value 0: expected a whole number, 1 or more"),
        (["--clients", "-1"], "--clients: invalid value -1: expected a whole number, 1 or more"),
        (
            ["--min-clients", "0"],
            "--min-clients: invalid value 0: expected a whole number, 1 or more",
        ),
        (
            ["--min-clients", "9"],
            "--min-clients: invalid value 9: expected a whole number from 1 to --clients (4)",
        ),
        (
            ["--clients", "2", "--min-clients", "3"],
            "--min-clients: invalid value 3: expected a whole number from 1 to --clients (2)",
        ),
        (
            ["--stragglers", "9"],
            "--stragglers: invalid value 9: expected a whole number from 0 to --clients (4)",
        ),
        (
            ["--stragglers", "-1"],
            "--stragglers: invalid value -1: expected a whole number, 0 or more",
        ),
        (
            ["--straggler-delay", "-1"],
            "--straggler-delay: invalid value -1: expected a finite number, 0 or more",
        ),
        (["--straggler-delay", "nan"], "--straggler-delay: invalid value nan: expected a finite"),
        (
            ["--seed", "-1"],
            "--seed: invalid value -1: expected a whole number from 0 to 4294967295",
        ),
        (
            ["--seed", str(2**32)],
            "--seed: invalid value 4294967296: expected a whole number from 0 to 4294967295",
        ),
    ],
)
def test_a_bad_demo_flag_is_a_usage_error_naming_flag_value_and_range(
    argv: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*_args: Any, **_kwargs: Any) -> int:
        raise AssertionError("the demo ran")

    monkeypatch.setattr(runner, "run_demo", never)
    line = _usage_error(argv, capsys)
    assert line == f"flwire demo: error: argument {expected}" or line.startswith(
        f"flwire demo: error: argument {expected}"
    ), line


def _checked(argv: list[str]) -> Any:
    """The demo's arguments once parsed and checked (nothing is run)."""
    args = build_parser().parse_args(["demo", *argv])
    cli._check_demo(args.demo_parser, args)
    return args


def test_good_demo_flags_pass_and_min_clients_defaults_to_at_most_clients() -> None:
    assert _checked([]).min_clients == 2
    # The default min-clients (2) is not an error with a single client: it becomes 1.
    assert _checked(["--clients", "1"]).min_clients == 1
    args = _checked(
        ["--clients", "3", "--min-clients", "3", "--stragglers", "3", "--straggler-delay", "0"]
    )
    assert (args.min_clients, args.stragglers, args.straggler_delay) == (3, 3, 0.0)
    args = _checked(["--learning-rate", "1e-4", "--max-wait-time", "0.5", "--seed", "4294967295"])
    assert (args.learning_rate, args.max_wait_time, args.seed) == (1e-4, 0.5, 2**32 - 1)


def test_report_without_matplotlib_fails_before_the_demo_starts(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_args: Any, **_kwargs: Any) -> int:
        raise AssertionError("the demo ran")

    monkeypatch.setattr(runner, "run_demo", never)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    # run_demo, patched, raises if reached: the check comes before the demo starts.
    assert main(["demo", "--report", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("flwire demo: the package 'matplotlib'"), err
    assert "pip install 'flwire[demo]'" in err
    assert not (tmp_path / "report").exists()


#: How long a demo whose clients all fail may take: importing torch and loading the digits
#: take most of it (a few seconds). The code this guards against waited for the whole
#: --max-wait-time, 300 s here, and twice that before the round failed.
FAILED_RUN_BOUND = 60


def _failing_training(fail: set[int]) -> Any:
    """A train_local whose run for the clients of index ``fail`` raises what torch raises for
    a negative learning rate; the others train for real (seed = client seed * 1000 + round,
    client seed = index with --seed 0)."""
    train_local = demo_client.train_local

    def train(model: Any, shard: Any, **kwargs: Any) -> float:
        if kwargs["seed"] // 1000 in fail:
            raise ValueError("Invalid learning rate: -1.0")
        return train_local(model, shard, **kwargs)

    return train


def test_a_demo_whose_clients_all_fail_ends_at_once_with_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(demo_client, "train_local", _failing_training({0, 1}))
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL", 3600.0)
    caplog.set_level(logging.DEBUG, logger="flwire")
    started = time.monotonic()
    argv = ["--clients", "2", "--min-clients", "1", "--rounds", "2", "--max-wait-time", "300"]
    status = main(["demo", *argv])
    elapsed = time.monotonic() - started
    assert status == 1
    assert elapsed < FAILED_RUN_BOUND, elapsed
    err = capsys.readouterr().err
    assert err == (
        "flwire demo: round 1 could not be aggregated: every client failed (2 of 2): "
        "client-0, client-1: training for round 1 failed: ValueError: Invalid learning rate: "
        "-1.0\n"
    ), err
    # The tracebacks are kept for debugging, at DEBUG only.
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


def test_a_demo_ends_at_once_when_too_few_clients_are_left_for_min_clients(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # client-0 trains (for real: one epoch), client-1 and client-2 fail; min-clients 2
    # cannot be met any more, so the round fails without waiting for --max-wait-time.
    monkeypatch.setattr(demo_client, "train_local", _failing_training({1, 2}))
    argv = ["--clients", "3", "--min-clients", "2", "--rounds", "1", "--local-epochs", "1"]
    started = time.monotonic()
    assert main(["demo", *argv, "--max-wait-time", "300"]) == 1
    assert time.monotonic() - started < FAILED_RUN_BOUND
    err = capsys.readouterr().err
    assert err.startswith(
        "flwire demo: round 1 could not be aggregated: 2 of 3 clients failed, leaving 1, "
        "fewer than min_clients=2: client-1, client-2: training for round 1 failed: "
        "ValueError"
    ), err
    assert err.count("\n") == 1, err


def test_a_client_that_fails_is_named_and_the_job_goes_on_with_the_others(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three clients, min-clients 2: client-2 fails in round 1; the round does not wait for
    # it (--max-wait-time 300), aggregates the two others, and round 2 asks only those.
    monkeypatch.setattr(demo_client, "train_local", _failing_training({2}))
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL", 3600.0)
    out = io.StringIO()  # run_demo's default out is the sys.stdout of its import
    run_demo = runner.run_demo
    monkeypatch.setattr(runner, "run_demo", lambda opts: run_demo(opts, out))
    argv = ["--clients", "3", "--min-clients", "2", "--rounds", "2", "--local-epochs", "1"]
    started = time.monotonic()
    status = main(["demo", *argv, "--max-wait-time", "300"])
    assert time.monotonic() - started < FAILED_RUN_BOUND
    text, err = out.getvalue(), capsys.readouterr().err
    assert "    1    2/3" in text, text
    assert (
        "       failed: client-2: training for round 1 failed: ValueError: Invalid learning "
        "rate: -1.0\n" in text
    ), text
    assert "    2    2/2" in text, text
    assert "left out" not in text, text
    assert err == "", err
    assert status == 0  # the accuracy rose


def test_a_client_process_that_exits_is_reported_to_the_server_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Kafka demo's clients are processes: one that exits before the job ends (a failed
    # client exits with status 1) is reported, the running one is not.
    monkeypatch.setattr(runner, "PROCESS_CHECK_INTERVAL", 0.05)

    class Server:
        def __init__(self) -> None:
            self.shutdown_sent = False
            self.failed: dict[str, str] = {}

        def client_failed(self, client_id: str, reason: str) -> None:
            self.failed[client_id] = reason

    server = Server()
    procs = [
        subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"]),
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
    ]

    async def watch() -> None:
        watcher = asyncio.create_task(runner._watch_processes(server, procs))  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        while not server.failed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the running one is checked again meanwhile
        watcher.cancel()

    try:
        asyncio.run(watch())
    finally:
        procs[1].kill()
        for proc in procs:
            proc.wait()
    assert server.failed == {"client-0": "its process exited with status 1"}
