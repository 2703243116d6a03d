"""Key pairs on disk and trust stores (a directory of <id>.pub files or a CSV)."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from flwire import security
from flwire.exceptions import ConfigurationException


def test_write_key_pair_writes_a_private_key_only_its_owner_reads(tmp_path):
    key = security.generate_private_key()
    private, public = security.write_key_pair("client-1", key, tmp_path / "keys")
    assert private.name == "client-1.key" and public.name == "client-1.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = security.load_private_key(private)
    message = b"same key"
    security.load_public_key(public).verify(loaded.sign(message), message)
    key.public_key().verify(loaded.sign(message), message)


def test_write_key_pair_refuses_to_overwrite(tmp_path):
    security.write_key_pair("c", security.generate_private_key(), tmp_path)
    before = (tmp_path / "c.key").read_bytes()
    with pytest.raises(ConfigurationException, match=r"c\.key exists: not overwriting it"):
        security.write_key_pair("c", security.generate_private_key(), tmp_path)
    assert (tmp_path / "c.key").read_bytes() == before
    (tmp_path / "c.key").unlink()
    with pytest.raises(ConfigurationException, match=r"c\.pub exists"):
        security.write_key_pair("c", security.generate_private_key(), tmp_path)
    assert not (tmp_path / "c.key").exists()


@pytest.mark.parametrize("key_id", ["", "../up", ".hidden", "a/b", "x" * 129, "a,b", "tab\t"])
def test_key_ids_that_cannot_name_a_file_are_refused(tmp_path, key_id):
    with pytest.raises(ConfigurationException, match="key id"):
        security.write_key_pair(key_id, security.generate_private_key(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_key_id_of_128_utf8_bytes_is_accepted_and_129_is_not():
    assert security.check_key_id("é" * 64) == "é" * 64
    with pytest.raises(ConfigurationException, match="1 to 128 UTF-8 bytes"):
        security.check_key_id("é" * 64 + "x")


def test_loading_what_is_not_a_key_names_the_file(tmp_path):
    bad = tmp_path / "x.pub"
    bad.write_text("not a key")
    with pytest.raises(ConfigurationException, match=r"x\.pub: not a PEM public key"):
        security.load_public_key(bad)
    with pytest.raises(ConfigurationException, match="cannot read"):
        security.load_private_key(tmp_path / "missing.key")
    with pytest.raises(ConfigurationException, match="not an Ed25519 public key"):
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = security.public_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())  # type: ignore[arg-type]
        security.load_public_key(pem)


def test_trust_store_from_a_directory(tmp_path):
    keys = {name: security.generate_private_key() for name in ("client-1", "client-2", "server")}
    for name, key in keys.items():
        security.write_key_pair(name, key, tmp_path)
    trust = security.load_trust_store(tmp_path)
    assert sorted(trust) == sorted(keys)
    for name, key in keys.items():
        trust[name].verify(key.sign(b"m"), b"m")


def test_trust_store_from_a_csv(tmp_path):
    a, b = security.generate_private_key(), security.generate_private_key()
    path = tmp_path / "trust.csv"
    path.write_text(
        "id,public_key\n"
        "# clients\n"
        f"client-1,{security.public_key_base64(a.public_key())}\n"
        "\n"
        f" client-2 , {security.public_key_base64(b.public_key())} \n"
    )
    trust = security.load_trust_store(path)
    assert sorted(trust) == ["client-1", "client-2"]
    trust["client-2"].verify(b.sign(b"m"), b"m")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("client-1", "expected 'id,public_key'"),
        ("client-1,AAAA,extra", "expected 'id,public_key'"),
        ("client-1,not base64!", "not valid base64"),
        (f"client-1,{base64.b64encode(bytes(31)).decode()}", "32 bytes, not 31"),
        (",AAAA", "key id"),
    ],
)
def test_a_bad_csv_line_is_named(tmp_path, line, match):
    path = tmp_path / "trust.csv"
    path.write_text(f"id,public_key\n{line}\n")
    with pytest.raises(ConfigurationException, match=rf"trust\.csv, line 2: .*{match}"):
        security.load_trust_store(path)


def test_a_csv_listing_an_id_twice_is_refused(tmp_path):
    encoded = security.public_key_base64(security.generate_private_key().public_key())
    path = tmp_path / "trust.csv"
    path.write_text(f"c,{encoded}\nc,{encoded}\n")
    with pytest.raises(ConfigurationException, match="line 2: key id 'c' is listed twice"):
        security.load_trust_store(path)


def test_a_missing_trust_store_is_named(tmp_path):
    with pytest.raises(ConfigurationException, match="does not exist"):
        security.load_trust_store(tmp_path / "nope.csv")


def test_base64_round_trip():
    key = security.generate_private_key().public_key()
    again = security.public_key_from_base64(security.public_key_base64(key))
    assert security.public_key_pem(again) == security.public_key_pem(key)
