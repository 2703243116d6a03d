"""AsyncKafkaClient warns about a config key that looks like one it reads but
is not (a misspelled trust_store turned verification off without a word), and
leaves the application's own keys alone."""

from __future__ import annotations

import logging

import pytest

from flwire.compat.communication.kafka_client import (
    CONFIG_KEYS,
    AsyncKafkaClient,
    warn_misspelled_keys,
)

LOGGER = "flwire.compat.communication.kafka_client"


def test_a_misspelled_security_key_is_named_with_its_fix(caplog: pytest.LogCaptureFixture) -> None:
    config = {"bootstrap_servers": "127.0.0.1:1", "group_id": "g", "truststore": "keys/"}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        client = AsyncKafkaClient(config)
    assert client.verifier is None  # as written, nothing verifies: hence the warning
    (record,) = caplog.records
    assert record.getMessage() == (
        "AsyncKafkaClient config key 'truststore' is not one it reads: did you mean "
        "'trust_store'? (it is ignored as written)"
    )


@pytest.mark.parametrize(
    ("key", "meant"),
    [("signing-key", "signing_key"), ("TrustStore", "trust_store"), ("groupid", "group_id")],
)
def test_near_misses_are_found(key: str, meant: str) -> None:
    (warning,) = warn_misspelled_keys({key: 1})
    assert f"did you mean {meant!r}?" in warning


def test_known_and_unrelated_keys_pass_quietly() -> None:
    config: dict[str, object] = {key: None for key in CONFIG_KEYS}
    config.update(client_id="c1", topics=["updates"], learning_rate=0.01, model="cnn")
    assert warn_misspelled_keys(config) == []
