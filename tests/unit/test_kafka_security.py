"""Kafka security settings: where they come from (config, FLWIRE_KAFKA__* env), that
every client of a KafkaTransport gets them, and that passwords stay out of text."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from flwire.compat.communication.kafka_client import AsyncKafkaClient
from flwire.exceptions import ConfigurationException
from flwire.transport import kafka, kafka_security
from flwire.transport.kafka import KafkaTransport

SECRET = "s3cret-pa55word"
SETTINGS = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "client-1",
    "sasl.password": SECRET,
    "ssl.ca.location": "/tmp/ca.crt",
}


def env_of(settings: dict[str, str]) -> dict[str, str]:
    return {kafka_security.env_name(k): v for k, v in settings.items()}


def test_env_names_follow_the_config_managers_scheme() -> None:
    assert kafka_security.env_name("sasl.password") == "FLWIRE_KAFKA__SASL_PASSWORD"
    assert kafka_security.env_name("ssl.ca.location") == "FLWIRE_KAFKA__SSL_CA_LOCATION"
    from flwire.compat.utils.config import ConfigManager

    # What ConfigManager maps into the "kafka" section is what the transport reads.
    section = ConfigManager.apply_env_overrides({}, environ=env_of(SETTINGS))["kafka"]
    assert kafka_security.security_settings(section, {}) == SETTINGS


@pytest.mark.parametrize("underscored", [False, True])
def test_settings_come_from_config_and_the_environment_wins(underscored: bool) -> None:
    config = {(k.replace(".", "_") if underscored else k): v for k, v in SETTINGS.items()}
    config["unrelated"] = "x"
    assert kafka_security.security_settings(config, {}) == SETTINGS
    env = {"FLWIRE_KAFKA__SASL_PASSWORD": "from-env", "FLWIRE_KAFKA__SASL_USERNAME": ""}
    got = kafka_security.security_settings(config, env)
    assert got["sasl.password"] == "from-env"
    assert got["sasl.username"] == "client-1"  # an empty variable does not override


def test_the_same_setting_given_twice_differently_is_refused() -> None:
    with pytest.raises(ConfigurationException, match=r"sasl\.password"):
        kafka_security.security_settings({"sasl.password": "a", "sasl_password": "b"}, {})


def test_credentials_without_a_sasl_protocol_are_refused() -> None:
    with pytest.raises(ConfigurationException, match=r"security\.protocol"):
        KafkaTransport("b:9094", security={"sasl.username": "u", "sasl.password": "p"}, environ={})
    with pytest.raises(ConfigurationException, match="SASL_SSL"):
        kafka_security.check({"security.protocol": "SSL", "sasl.password": "p"})
    kafka_security.check({"security.protocol": "SSL", "ssl.ca.location": "/ca"})


class _Recorder:
    """Stands in for confluent-kafka's client classes: records each config."""

    configs: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.configs.append((type(self).__name__, dict(config)))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class FakeProducer(_Recorder):
    pass


class FakeAdmin(_Recorder):
    pass


class FakeConsumer(_Recorder):
    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    configs: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(_Recorder, "configs", configs)
    monkeypatch.setattr(kafka, "Producer", FakeProducer)
    monkeypatch.setattr(kafka, "AdminClient", FakeAdmin)
    monkeypatch.setattr(kafka, "Consumer", FakeConsumer)

    def read_topic(config: dict[str, Any], topic: str, timeout: float) -> list[Any]:
        configs.append(("read_topic consumer", dict(config)))
        return []

    monkeypatch.setattr(kafka.kafka_admin, "read_topic", read_topic)
    return configs


def _use_every_client(transport: KafkaTransport) -> None:
    async def run() -> None:
        await transport.start()

        async def no_topics(topics: Any) -> None:
            return None

        transport.ensure_topics = no_topics  # type: ignore[method-assign]
        subscription = await transport.subscribe(["t"], "g")
        await transport.read_topic("t")
        await subscription.close()
        await transport.stop()

    asyncio.run(run())


def _assert_every_client_has(
    recorded: list[tuple[str, dict[str, Any]]], expected: dict[str, str]
) -> None:
    kinds = sorted(kind for kind, _ in recorded)
    assert kinds == ["FakeAdmin", "FakeConsumer", "FakeProducer", "read_topic consumer"]
    for kind, config in recorded:
        assert {k: config.get(k) for k in expected} == expected, kind


@pytest.mark.parametrize("source", ["security", "producer_config", "consumer_config", "env"])
def test_every_client_gets_the_settings(
    recorded: list[tuple[str, dict[str, Any]]], source: str
) -> None:
    kwargs: dict[str, Any] = {"environ": {}}
    if source == "env":
        kwargs["environ"] = env_of(SETTINGS)
    else:
        kwargs[source] = dict(SETTINGS)
    transport = KafkaTransport("127.0.0.1:9094", **kwargs)
    assert {k: transport.connection_config().get(k) for k in SETTINGS} == SETTINGS
    _use_every_client(transport)
    _assert_every_client_has(recorded, SETTINGS)


def test_the_environment_overrides_the_config(recorded: list[tuple[str, dict[str, Any]]]) -> None:
    transport = KafkaTransport(
        "127.0.0.1:9094",
        security={**SETTINGS, "sasl.password": "in-code"},
        producer_config={"sasl.username": "from-producer-config"},
        environ={"FLWIRE_KAFKA__SASL_PASSWORD": SECRET},
    )
    _use_every_client(transport)
    _assert_every_client_has(
        recorded, {"sasl.password": SECRET, "sasl.username": "from-producer-config"}
    )


def test_async_kafka_client_passes_its_security_config(
    recorded: list[tuple[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:9094"}
    config.update({k.replace(".", "_"): v for k, v in SETTINGS.items()})
    config["sasl_password"] = "overridden"
    monkeypatch.setenv("FLWIRE_KAFKA__SASL_PASSWORD", SECRET)
    transport = AsyncKafkaClient(config)._make_transport()
    assert isinstance(transport, KafkaTransport)
    _use_every_client(transport)
    _assert_every_client_has(recorded, SETTINGS)


def test_passwords_stay_out_of_repr_and_redacted_configs() -> None:
    transport = KafkaTransport("127.0.0.1:9094", security=SETTINGS, environ={})
    assert SECRET not in repr(transport)
    assert "client-1" in repr(transport) and "SCRAM-SHA-512" in repr(transport)
    shown = kafka_security.redacted(transport.connection_config())
    assert shown["sasl.password"] == kafka_security.MASK
    assert shown["sasl.username"] == "client-1"
    assert SECRET not in str(shown)
    jaas = {"sasl.jaas.config": f'... password="{SECRET}";', "ssl.key.password": SECRET}
    assert SECRET not in str(kafka_security.redacted(jaas))


def test_principal_and_description() -> None:
    assert kafka_security.principal(SETTINGS) == "User:client-1"
    assert kafka_security.principal({"sasl.username": "x"}) == "User:ANONYMOUS"
    assert "unauthenticated" in kafka_security.describe({})
