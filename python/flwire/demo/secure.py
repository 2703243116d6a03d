"""`flwire demo --secure`: the Kafka demo over the secured broker of
``kafka/broker.sh up --secure`` (SASL_SSL, SCRAM-SHA-512, ACLs), with signed
messages.

Before the job starts, as the broker's ``admin`` user (whose password and the
CA certificate ``kafka/broker.sh`` wrote to ``<kafka home>/secure/``):

- each demo client logs in as the SCRAM-SHA-512 user of its own name: one of
  ``kafka/broker.sh``'s users (``client-1`` ...) with its password, else a user
  made for the run with a fresh random password (``client-0``; upserted, so a
  run never reuses an earlier run's password);
- the job's topics are created and its ACLs granted
  (:mod:`flwire.transport.kafka_acl`): the server user ``server`` writes the
  broadcast topic and reads updates and control; each client writes updates
  and control, reads broadcast, in its own consumer group. Nothing else.

The server then connects as ``server``; each client process as its own user,
its credentials passed in its environment (``FLWIRE_KAFKA__SASL_PASSWORD``
and the like), never on its command line.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwire.exceptions import CommunicationException
from flwire.transport import TopicLayout, kafka_acl
from flwire.transport.kafka_security import env_name

#: The server's user on the secured broker (kafka/broker.sh creates it).
SERVER_USER = "server"
#: How long an admin request may take.
ADMIN_TIMEOUT_S = 30.0


@dataclass
class SecureJob:
    """librdkafka security settings of the server and of each client."""

    server: dict[str, str]
    clients: dict[str, dict[str, str]] = field(default_factory=dict)

    def client_env(self, client_id: str) -> dict[str, str]:
        """A client process's environment overrides: its own credentials."""
        return {env_name(k): v for k, v in self.clients[client_id].items()}


def secrets_folder(kafka_home: Path | None = None) -> Path:
    """Where kafka/broker.sh keeps the secured broker's CA and passwords."""
    home = kafka_home or Path(
        os.environ.get("FLWIRE_KAFKA_HOME", Path.home() / ".cache/flwire/kafka")
    )
    return Path(home) / "secure"


def prepare(
    bootstrap: str, layout: TopicLayout, client_ids: list[str], kafka_home: Path | None = None
) -> SecureJob:
    """Create the clients' users, the job's topics and its ACLs; return the
    settings each party connects with. Raises CommunicationException naming
    what is missing or what the broker refused."""
    folder = secrets_folder(kafka_home)
    users, ca = folder / "users.properties", folder / "ca.crt"
    if not users.is_file() or not ca.is_file():
        raise CommunicationException(
            f"no secured broker set-up in {folder} (users.properties, ca.crt): start one with "
            "`bash kafka/broker.sh up --secure` (`make kafka-up-secure`) in the flwire "
            "repository, or point --kafka-home (FLWIRE_KAFKA_HOME) at its folder"
        )
    try:
        admin = kafka_acl.users_file_config(users, ca, "admin")
        server = kafka_acl.users_file_config(users, ca, SERVER_USER)
    except KeyError as exc:
        raise CommunicationException(f"the secured broker's {exc.args[0]}") from None
    admin_config = {"bootstrap.servers": bootstrap, **admin}
    # kafka/broker.sh's own users keep their passwords (others log in with them);
    # a client id it did not make gets a user of its own with a fresh password.
    known = kafka_acl.read_users(users)
    passwords = {c: known.get(c) or secrets.token_urlsafe(24) for c in client_ids}
    _upsert_users(_admin(admin_config), {c: p for c, p in passwords.items() if c not in known})
    kafka_acl.apply(
        admin_config,
        layout,
        kafka_acl.job_grants(layout, SERVER_USER, client_ids),
        timeout_s=ADMIN_TIMEOUT_S,
    )
    job = SecureJob(server)
    for client_id, password in passwords.items():
        job.clients[client_id] = {**server, "sasl.username": client_id, "sasl.password": password}
    return job


def _admin(admin_config: dict[str, Any]) -> Any:
    """An AdminClient of the admin user, once the broker has answered it."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from flwire.transport.kafka_logging import client_logging, reason

    admin = AdminClient({**admin_config, **client_logging(errors=False)})
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise CommunicationException(
            f"the secured broker at {admin_config['bootstrap.servers']} did not answer the "
            f"admin user: {reason(exc.args[0])}; start it with `bash kafka/broker.sh up "
            "--secure` (`make kafka-up-secure`) or check --bootstrap-servers"
        ) from None
    return admin


def _upsert_users(admin: Any, passwords: dict[str, str]) -> None:
    if not passwords:
        return
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    from flwire.transport.kafka_logging import reason

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in passwords.items()
    ]
    futures = admin.alter_user_scram_credentials(upserts, request_timeout=ADMIN_TIMEOUT_S)
    for user, future in futures.items():
        try:
            future.result(timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise CommunicationException(
                f"could not create the SCRAM user {user!r} as admin: {reason(exc.args[0])}"
            ) from None
