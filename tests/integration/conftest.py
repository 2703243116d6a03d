"""Fixtures for the tests against a real Apache Kafka broker.

``make test`` starts the broker (``make kafka-up``) before pytest and stops it
after; ``FLWIRE_KAFKA_BOOTSTRAP`` points the tests at another broker. Without a
reachable broker these tests fail (never skip) and say how to start one. The
fault-injection tests start a private broker of their own on another port,
because they stop and restart it; the security tests start the secured broker
(``kafka/broker.sh up --secure``) on a port of their own, once per session.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from flwire.transport import kafka_acl

from .faults.common import BROKER_SH, ScriptBroker

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PRIVATE_PORT = int(os.environ.get("FLWIRE_KAFKA_FAULT_PORT", "19092"))
SECURE_PORT = int(os.environ.get("FLWIRE_KAFKA_SECURE_TEST_PORT", "19094"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
    try:
        admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The broker under test; fails with instructions when there is none."""
    address = os.environ.get("FLWIRE_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    if not broker_answers(address):
        pytest.fail(
            f"no Kafka broker answers at {address}. Start one with `make kafka-up` "
            "(or run `make test`, which starts and stops it), or set FLWIRE_KAFKA_BOOTSTRAP "
            "to a running broker.",
            pytrace=False,
        )
    return address


@pytest.fixture
def job_id() -> str:
    """A fresh job id, so each test has topics of its own."""
    return f"t{uuid.uuid4().hex[:12]}"


#: A broker this test session owns and may kill and restart (kafka/broker.sh on a
#: port of its own): the fault harness's ScriptBroker.
PrivateBroker = ScriptBroker


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    """A fresh single-node cluster for each fault test, so what one test's crash
    leaves behind cannot affect the next (the iterations of one test share it, and
    kill and restart it as their scenario says)."""
    broker = PrivateBroker(PRIVATE_PORT)
    broker.reset()
    broker.up()
    try:
        yield broker
    finally:
        broker.reset()


@dataclass(frozen=True)
class SecureBroker:
    """The secured broker of this test session (kafka/broker.sh up --secure on
    SECURE_PORT): SASL_SSL with SCRAM-SHA-512, the StandardAuthorizer, ACLs."""

    port: int
    users: Path
    ca: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self, user: str) -> dict[str, str]:
        """librdkafka security settings of ``user`` (admin, server, client-1...)."""
        return kafka_acl.users_file_config(self.users, self.ca, user)


def _secure_script(command: str) -> str:
    env = {**os.environ, "FLWIRE_KAFKA_SECURE_PORT": str(SECURE_PORT)}
    result = subprocess.run(
        ["bash", str(BROKER_SH), command, "--secure"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"kafka/broker.sh {command} --secure failed on port {SECURE_PORT}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureBroker]:
    """A fresh secured broker for the session, on a port of its own, deleted after."""
    _secure_script("reset")
    _secure_script("up")
    home = Path(os.environ.get("FLWIRE_KAFKA_HOME", Path.home() / ".cache/flwire/kafka"))
    secrets = home / "secure"  # made by broker.sh on its first secure start
    try:
        yield SecureBroker(SECURE_PORT, secrets / "users.properties", secrets / "ca.crt")
    finally:
        _secure_script("reset")
