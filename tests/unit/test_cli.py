"""The ``flwire`` command line: help, --version, inspect (files, stdin, errors), demo
argument checks, and no ``bench`` command."""

from __future__ import annotations

import importlib.metadata
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flwire
from flwire import messages
from flwire.cli import main
from flwire.tensors import encode_tensor_map, read_tensor_map

COMMANDS = ("demo", "aggregator", "inspect", "keys")


def _weights() -> dict[str, torch.Tensor]:
    return {
        "fc.weight": (torch.arange(1024) % 13).float().reshape(32, 32),
        "fc.bias": torch.linspace(-1, 1, 10),
    }


@pytest.fixture
def update_msg() -> messages.Message:
    return messages.client_update(
        "client-3", round_id=2, weights=_weights(), metrics={"loss": 0.5}, num_examples=64
    )


@pytest.fixture
def update_file(tmp_path, update_msg) -> Path:
    path = tmp_path / "update.bin"
    path.write_bytes(update_msg.to_bytes())
    return path


@pytest.fixture
def map_file(tmp_path) -> Path:
    path = tmp_path / "weights.tmap"
    path.write_bytes(encode_tensor_map(_weights()))
    return path


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


# ----------------------------------------------------------------------------- help


def test_help_exits_zero_and_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "bench" not in out
    assert "--version" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_exits_zero(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert command in capsys.readouterr().out


def test_no_arguments_prints_help_and_returns_two(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: flwire" in out
    for command in COMMANDS:
        assert command in out
    assert "bench" not in out


def test_unknown_command_is_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_inspect_without_file_is_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect"])
    assert info.value.code == 2


# ----------------------------------------------------------------------------- inspect


def test_inspect_client_update_file(update_file, update_msg, capsys):
    assert main(["inspect", str(update_file)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "client_update" in out
    assert update_msg.message_id in out
    assert "client-3" in out
    assert "round_id: 2" in out
    for name, shape in (("fc.weight", "[32, 32]"), ("fc.bias", "[10]")):
        (line,) = [line for line in out.splitlines() if line.strip().startswith(name + " ")]
        assert "float32" in line
        assert shape in line
        assert line.rstrip().endswith("crc ok")
    codecs = {
        r.name: r.codec_name.removeprefix("CODEC_").lower().replace("unspecified", "none")
        for r in update_msg.weights_info().records
    }
    assert codecs["fc.weight"] == "zstd"
    for name, codec in codecs.items():
        (line,) = [line for line in out.splitlines() if line.strip().startswith(name + " ")]
        assert codec in line
    assert out.count("crc ok") == 2
    assert captured.err == ""


def test_inspect_tensor_map_file(map_file, capsys):
    assert main(["inspect", str(map_file)]) == 0
    out = capsys.readouterr().out
    assert "TensorMap" in out
    assert "2 tensors" in out
    assert out.count("crc ok") == 2


def test_inspect_stdin(update_msg, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Stdin(update_msg.to_bytes()))
    assert main(["inspect", "-"]) == 0
    out = capsys.readouterr().out
    assert "client_update" in out
    assert update_msg.message_id in out
    assert out.count("crc ok") == 2


def test_inspect_stdin_tensor_map(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Stdin(encode_tensor_map(_weights())))
    assert main(["inspect", "-"]) == 0
    assert "TensorMap" in capsys.readouterr().out


def test_inspect_stdin_garbage(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Stdin(b"\xff" * 16))
    assert main(["inspect", "-"]) == 1


def test_inspect_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.bin"
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert str(path) in err_lines[0]
    assert "No such file" in err_lines[0]
    assert captured.out == ""


def test_inspect_directory(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_inspect_garbage_file(tmp_path, capsys):
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"this is not a flwire message \x00\xff\xfe" * 3)
    assert main(["inspect", str(path)]) == 1
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1
    assert "not a flwire message" in lines[0]


def _flip_inside(data: bytes, payload: bytes, index: int) -> bytes:
    offset = data.find(payload)
    assert offset >= 0
    out = bytearray(data)
    out[offset + index] ^= 0x5A
    return bytes(out)


def test_inspect_corrupted_zstd_tensor(tmp_path, update_msg, capsys):
    data = update_msg.to_bytes()
    record = next(r for r in update_msg.weights_info().records if r.name == "fc.weight")
    frame = bytes(record.data)
    path = tmp_path / "bad.bin"
    path.write_bytes(_flip_inside(data, frame, len(frame) // 2))
    assert main(["inspect", str(path)]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.strip().startswith("fc.weight ")]
    assert "BAD" in line


def test_inspect_corrupted_raw_tensor(tmp_path, capsys):
    data = encode_tensor_map(_weights())
    record = next(r for r in read_tensor_map(data).records if r.name == "fc.bias")
    assert record.codec_name == "CODEC_UNSPECIFIED"
    path = tmp_path / "bad.tmap"
    path.write_bytes(_flip_inside(data, bytes(record.data), 0))
    assert main(["inspect", str(path)]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.strip().startswith("fc.bias ")]
    assert "BAD" in line
    assert out.count("crc ok") == 1


def test_inspect_corrupted_zstd_header_in_message(tmp_path, update_msg, capsys):
    # Regression: inspect_bytes used to let SerializationException escape (a traceback).
    data = update_msg.to_bytes()
    record = next(r for r in update_msg.weights_info().records if r.name == "fc.weight")
    path = tmp_path / "bad-header.bin"
    path.write_bytes(_flip_inside(data, bytes(record.data), 1))
    assert main(["inspect", str(path)]) == 1
    assert "BAD" in capsys.readouterr().out


def test_inspect_via_python_module(update_file):
    result = subprocess.run(
        [sys.executable, "-m", "flwire.cli", "inspect", str(update_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "client_update" in result.stdout
    assert result.stdout.count("crc ok") == 2


# ----------------------------------------------------------------------------- demo


@pytest.mark.parametrize("flag", ["--clients", "--rounds"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_demo_rejects_nonpositive_counts(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: invalid value {value}: expected a whole number, 1 or more" in err
    assert "Traceback" not in err


def test_demo_rejects_non_integer_clients(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--clients", "many"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [["bench"], ["bench", "--help"], ["bench", "x", "--quick"], ["bench", "--", "--quick"]],
    ids=["bare", "help", "positional", "after-double-dash"],
)
def test_bench_is_an_unknown_command(argv, tmp_path, monkeypatch, capsys):
    """``flwire bench`` is gone (the benchmarks run as ``python -m benchmarks.codec``
    and ``python -m benchmarks.e2e``, or ``make bench``): a usage error (exit code 2).
    The old command ran a ``benchmarks/bench.py`` found above the current folder, a
    file the repository no longer has; the test plants one there and checks that
    nothing runs it."""
    marker = tmp_path / "ran"
    script = tmp_path / "benchmarks" / "bench.py"
    script.parent.mkdir()
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    cwd = tmp_path / "project" / "sub"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage" in err
    assert "invalid choice: 'bench'" in err
    assert not marker.exists()


# ----------------------------------------------------------------------------- --version


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"flwire {importlib.metadata.version('flwire')}\n"


def test_version_of_the_flwire_command():
    # The console script installed beside this interpreter (pyproject's [project.scripts]).
    command = Path(sys.executable).with_name("flwire")
    assert command.exists(), f"{command}: the flwire command is not installed"
    result = subprocess.run(
        [str(command), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"flwire {importlib.metadata.version('flwire')}"


def test_package_version_is_the_metadata_version():
    assert flwire.__version__ == importlib.metadata.version("flwire")


def test_keyboard_interrupt_returns_130(monkeypatch, tmp_path, capsys):
    def interrupted(data, out):
        raise KeyboardInterrupt

    monkeypatch.setattr("flwire.inspect_cmd.inspect_bytes", interrupted)
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    assert main(["inspect", str(path)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_aggregator_with_a_missing_trust_store_says_so(tmp_path, capsys):
    argv = ["aggregator", "--bootstrap-servers", "127.0.0.1:1", "--job", "j", "--id", "a"]
    assert main([*argv, "--trust", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert f"flwire aggregator: trust store {tmp_path / 'nope'} does not exist" in err


def test_aggregator_rejects_a_models_wait_of_zero(capsys):
    argv = ["aggregator", "--bootstrap-servers", "127.0.0.1:1", "--job", "j", "--id", "a"]
    assert main([*argv, "--models-wait", "0"]) == 2
    assert "--models-wait must be above 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"), [("--id", ""), ("--job", ""), ("--job", "bad job/x"), ("--prefix", "a b")]
)
def test_aggregator_refuses_names_kafka_cannot_take(flag, value, capsys):
    args = {"--job": "j", "--id": "a", "--prefix": "flwire", flag: value}
    argv = ["aggregator", "--bootstrap-servers", "127.0.0.1:1"]
    for name, given in args.items():
        argv += [name, given]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"flwire aggregator: {flag} {value!r} cannot name Kafka topics" in err


def test_run_aggregator_reports_a_refused_setting_in_one_line(capsys):
    from flwire.aggregation.service import AggregatorOptions, run_aggregator

    opts = AggregatorOptions("127.0.0.1:1", "j", "a", models_wait_s=-1.0)
    assert run_aggregator(opts, io.StringIO()) == 2
    assert capsys.readouterr().err == "flwire aggregator: wait_s must be >= 0 and keep >= 1\n"


def test_aggregator_memory_cap_defaults_to_the_reassemblers_and_a_bad_spill_dir_is_refused(
    tmp_path, capsys
):
    from flwire.cli import _MAX_MEMORY_BYTES, build_parser
    from flwire.transport.chunking import MAX_MEMORY_BYTES

    argv = ["aggregator", "--bootstrap-servers", "127.0.0.1:1", "--job", "j", "--id", "a"]
    assert build_parser().parse_args(argv).max_memory_mb * 1_000_000 == _MAX_MEMORY_BYTES
    assert _MAX_MEMORY_BYTES == MAX_MEMORY_BYTES
    assert main([*argv, "--spill-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"flwire aggregator: spill_dir '{tmp_path / 'nope'}' is not a directory")
    assert main([*argv, "--max-memory-mb", "-1"]) == 2
    assert "--max-memory-mb must be 0 or above" in capsys.readouterr().err


def test_python_dash_m_flwire_is_the_command() -> None:
    import subprocess
    import sys

    from flwire._version import __version__

    done = subprocess.run(
        [sys.executable, "-m", "flwire", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert __version__ in done.stdout


def test_aggregator_takes_max_num_examples_and_its_default_is_the_policys(capsys):
    """A new user's site of 2,000,000 examples was refused with no flag to change it."""
    from flwire.aggregation.screening import UpdatePolicy
    from flwire.cli import _MAX_NUM_EXAMPLES, build_parser

    argv = ["aggregator", "--bootstrap-servers", "127.0.0.1:1", "--job", "j", "--id", "a"]
    assert build_parser().parse_args(argv).max_num_examples == _MAX_NUM_EXAMPLES
    assert _MAX_NUM_EXAMPLES == UpdatePolicy.max_num_examples
    parsed = build_parser().parse_args([*argv, "--max-num-examples", "5000000"])
    assert parsed.max_num_examples == 5_000_000
    assert main([*argv, "--max-num-examples", "0"]) == 2
    assert "--max-num-examples must be 1 or above" in capsys.readouterr().err


def test_aggregator_service_screens_with_the_max_num_examples_given() -> None:
    from flwire.aggregation.service import AggregatorOptions, _parts

    opts = AggregatorOptions(
        bootstrap_servers="127.0.0.1:1", job_id="j", aggregator_id="a", max_num_examples=7
    )
    _layout, _models, aggregator = _parts(opts, io.StringIO())
    assert aggregator.intake.policy.max_num_examples == 7


@pytest.mark.parametrize("command", ["demo", "aggregator", "inspect", "keys", "keys generate"])
def test_every_command_prints_the_version(command: str, capsys) -> None:
    from flwire._version import __version__

    with pytest.raises(SystemExit) as info:
        main([*command.split(), "--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"flwire {__version__}"
