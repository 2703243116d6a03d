"""``flwire keys generate``: a key pair on disk, the private key 0600, never
overwritten, a trust store line that loads, and one-line errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from flwire import messages, security
from flwire.cli import main


def test_generate_writes_a_key_pair_that_signs_and_verifies(tmp_path, capsys):
    assert main(["keys", "generate", "--id", "client-1", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    private, public = tmp_path / "k" / "client-1.key", tmp_path / "k" / "client-1.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert str(private) in out and str(public) in out
    msg = messages.heartbeat("client-1", "idle")
    signed = security.sign_message(msg, "client-1", security.load_private_key(private))
    assert security.verify_message(signed, security.load_trust_store(tmp_path / "k")).type == (
        "heartbeat"
    )
    line = next(x for x in out.splitlines() if x.startswith("trust store line: "))
    csv = tmp_path / "trust.csv"
    csv.write_text(line.removeprefix("trust store line: ") + "\n")
    assert security.verify_envelope(signed, security.load_trust_store(csv)) == "client-1"


def test_generate_refuses_to_overwrite(tmp_path, capsys):
    assert main(["keys", "generate", "--id", "c", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "c.key").read_bytes()
    capsys.readouterr()
    assert main(["keys", "generate", "--id", "c", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"flwire keys generate: {tmp_path / 'c.key'} exists: not overwriting it\n"
    assert (tmp_path / "c.key").read_bytes() == before


@pytest.mark.parametrize("key_id", ["../c", ".c", "x" * 129])
def test_generate_refuses_a_bad_id_in_one_line(tmp_path, capsys, key_id):
    assert main(["keys", "generate", "--id", key_id, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flwire keys generate: key id ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_generate_into_an_unwritable_place_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["keys", "generate", "--id", "c", "--out", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flwire keys generate: cannot write") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["keys"], ["keys", "generate", "--out", "x"]])
def test_missing_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_without_cryptography_the_command_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from flwire.cli import main\n"
        f"sys.exit(main(['keys', 'generate', '--id', 'c', '--out', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "pip install 'flwire[sign]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
