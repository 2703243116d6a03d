"""Set-up mistakes with keys are said, not silently accepted: a trust store
that holds no public key (an empty folder, or one of private keys) fails to
load with the fix, and a private key file others may read loads with a
warning (as ssh checks)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flwire import security
from flwire.exceptions import ConfigurationException
from flwire.security.keys import write_key_pair

LOGGER = "flwire.security.keys"


def test_an_empty_trust_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationException, match=r"holds no <id>\.pub file: copy the"):
        security.load_trust_store(tmp_path)


def test_a_folder_of_private_keys_is_refused_and_named(tmp_path: Path) -> None:
    key = security.private_key_from_seed(b"\x01" * 32)
    _, public = write_key_pair("client-1", key, tmp_path)
    public.unlink()
    with pytest.raises(ConfigurationException, match=r"\(only \.key files: trust stores take"):
        security.load_trust_store(tmp_path)


def test_an_empty_csv_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "trust.csv"
    csv.write_text("id,public_key\n# nobody yet\n")
    with pytest.raises(ConfigurationException, match=r"lists no id,public_key line"):
        security.load_trust_store(csv)


def test_a_trust_folder_with_a_key_loads(tmp_path: Path) -> None:
    write_key_pair("client-1", security.private_key_from_seed(b"\x02" * 32), tmp_path)
    assert list(security.load_trust_store(tmp_path)) == ["client-1"]


def test_a_private_key_others_may_read_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private, _ = write_key_pair("server", security.private_key_from_seed(b"\x03" * 32), tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        security.load_private_key(private)  # written 0600: no warning
        assert caplog.records == []
        private.chmod(0o644)
        security.load_private_key(private)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"private key {private} may be read by others (mode 0644): chmod 600 {private}"
    )
