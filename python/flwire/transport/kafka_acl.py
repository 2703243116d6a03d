"""The Kafka ACLs of one FL job, derived from the schema, and a tool that grants them.

Who may do what follows the schema's routing (``option (flwire.v1.message)``:
each message type's topic and sender): a role **writes** the topics of the
messages it sends and **reads** those of the messages the other role sends. So,
for job ``J`` (topics ``flwire.J.<name>``, see :class:`TopicLayout`):

- each client ``C`` writes ``updates`` and ``control`` (updates, evaluation
  results, registration, heartbeats), reads ``broadcast``, with its own consumer
  group ``flwire.J.client.C``;
- the server writes ``broadcast`` and reads ``updates`` and ``control`` with the
  group ``flwire.J.server``; it may also create the job's topics;
- the server side's scale-out aggregators (:mod:`flwire.aggregation.scaleout`)
  run as the server's user: they read ``updates`` with the group
  ``flwire.J.aggregators`` and write ``aggregates`` in transactions (the
  transactional ids ``flwire.J.aggregator.*``), which the server reads. A
  message's readers follow from its sender: a server message is for the
  clients, a client or aggregator message for the server, so no client may
  read or write ``aggregates``.

Each role also gets what a :class:`~flwire.transport.Channel` needs besides:
its group's compacted seen-ids topic ``<group>.seen`` (create, read, write),
the dead-letter topics ``<topic>.dead-letter`` of the topics it reads (create,
write), and, for reading a topic back without joining a group, the throwaway
groups ``flwire.read-topic.*`` (read, prefixed). Nothing else: with the
broker's ``allow.everyone.if.no.acl.found=false``, a client cannot write
``broadcast``, read ``updates``, read another job's topics or join another
client's group.

Run as the admin user::

    python -m flwire.transport.kafka_acl --bootstrap 127.0.0.1:9094 \\
        --users ~/.cache/flwire/kafka/secure/users.properties \\
        --ca ~/.cache/flwire/kafka/secure/ca.crt --job J --server server client-1 client-2

(``bash kafka/broker.sh acl-job J --secure`` does this for the local secure
broker.) Without ``--users``, the admin's settings come from the
``FLWIRE_KAFKA__*`` environment (:mod:`flwire.transport.kafka_security`).
``--print`` lists the ACLs without a broker.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwire.messages.schema import body_type, types_from
from flwire.transport.failures import FailurePolicy
from flwire.transport.layout import TopicLayout

#: Prefix of the groups :func:`flwire.transport.kafka_admin.read_topic` uses.
READ_TOPIC_GROUPS = "flwire.read-topic."
#: The two users' roles of the schema.
ROLES = ("server", "client")
#: The user role each sender role of the schema runs as, and the role that reads
#: what it sends (the aggregators are processes of the server side).
RUNS_AS = {"server": "server", "aggregator": "server", "client": "client"}
READ_BY = {"server": "client", "aggregator": "server", "client": "server"}


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` (``read``, ``write``,
    ``create``, ``describe``) the ``resource`` (``topic`` or ``group``) ``name``,
    matched literally or as a prefix (``pattern``)."""

    principal: str
    resource: str
    name: str
    operation: str
    pattern: str = "literal"

    def line(self) -> str:
        star = "*" if self.pattern == "prefixed" else ""
        return f"ALLOW {self.principal} {self.operation} {self.resource} {self.name}{star}"


def role_topics(layout: TopicLayout) -> dict[str, tuple[list[str], list[str]]]:
    """Per role, (topics it writes, topics it reads), from the schema: a role
    writes the topics of the messages it (or a sender role that runs as it, see
    :data:`RUNS_AS`) sends, and reads those of the messages meant for it
    (:data:`READ_BY`)."""
    writes: dict[str, set[str]] = {role: set() for role in ROLES}
    reads: dict[str, set[str]] = {role: set() for role in ROLES}
    for sender, user in RUNS_AS.items():
        topics = {body_type(name).topic for name in types_from(sender)}
        writes[user] |= topics
        reads[READ_BY[sender]] |= topics
    return {
        role: (
            [layout.topic(t) for t in sorted(writes[role])],
            [layout.topic(t) for t in sorted(reads[role])],
        )
        for role in ROLES
    }


def _role_grants(
    user: str, writes: Sequence[str], reads: Sequence[str], group: str, policy: FailurePolicy
) -> list[Grant]:
    principal = f"User:{user}"
    grants = [Grant(principal, "topic", t, "write") for t in writes]
    grants += [Grant(principal, "topic", t, "read") for t in reads]
    grants.append(Grant(principal, "group", group, "read"))
    seen = f"{group}.seen"
    grants += [Grant(principal, "topic", seen, op) for op in ("create", "read", "write")]
    for topic in reads:
        dead_letter = policy.dead_letter_topic(topic)
        if dead_letter is not None:
            grants += [Grant(principal, "topic", dead_letter, op) for op in ("create", "write")]
    grants.append(Grant(principal, "group", READ_TOPIC_GROUPS, "read", "prefixed"))
    return grants


def job_grants(
    layout: TopicLayout,
    server: str,
    clients: Sequence[str],
    policy: FailurePolicy | None = None,
) -> list[Grant]:
    """Every ACL of the job: the server user's, then each client user's (see the
    module's docstring). ``policy`` names the dead-letter topics (default
    :class:`FailurePolicy`'s ``.dead-letter`` suffix)."""
    if not server or any(not c for c in clients):
        raise ValueError("user names must not be empty")
    if server in clients:
        raise ValueError(f"{server!r} cannot be both the server and a client")
    policy = policy or FailurePolicy()
    topics = role_topics(layout)
    writes, reads = topics["server"]
    grants = _role_grants(server, writes, reads, layout.server_group(), policy)
    grants += [Grant(f"User:{server}", "topic", t, "create") for t in layout.all]
    # Scale-out: the aggregators' group and transactional ids.
    grants.append(Grant(f"User:{server}", "group", layout.aggregator_group(), "read"))
    grants += [
        Grant(
            f"User:{server}", "transactional_id", layout.aggregator_transaction(""), op, "prefixed"
        )
        for op in ("write", "describe")
    ]
    writes, reads = topics["client"]
    for client in dict.fromkeys(clients):
        grants += _role_grants(client, writes, reads, layout.client_group(client), policy)
    return grants


def apply(
    admin_config: Mapping[str, Any],
    layout: TopicLayout,
    grants: Sequence[Grant],
    *,
    create_topics: bool = True,
    num_partitions: int = 1,
    timeout_s: float = 30.0,
) -> None:
    """Create the job's topics (unless they exist) and the ACLs ``grants`` as the
    user of ``admin_config`` (librdkafka settings; it needs Alter on the cluster,
    e.g. a super user). Raises CommunicationException naming what failed."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        NewTopic,
        ResourcePatternType,
        ResourceType,
    )

    from flwire.exceptions import CommunicationException
    from flwire.transport.kafka_logging import client_logging, reason

    admin = AdminClient({**admin_config, **client_logging(errors=False)})
    if create_topics:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=num_partitions, replication_factor=-1) for t in layout.all],
            request_timeout=timeout_s,
        )
        for topic, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise CommunicationException(
                        f"could not create topic {topic!r}: {reason(exc.args[0])}"
                    ) from None
    bindings = [
        AclBinding(
            ResourceType[g.resource.upper()],
            g.name,
            ResourcePatternType[g.pattern.upper()],
            g.principal,
            "*",
            AclOperation[g.operation.upper()],
            AclPermissionType.ALLOW,
        )
        for g in grants
    ]
    results = admin.create_acls(bindings, request_timeout=timeout_s)
    for binding, future in results.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise CommunicationException(
                f"could not create the ACL {binding}: {reason(exc.args[0])} (is this user a "
                "super user, or allowed Alter on the cluster?)"
            ) from None


def users_file_config(users: Path, ca: Path, user: str = "admin") -> dict[str, str]:
    """librdkafka settings for ``user`` of the secure broker of kafka/broker.sh, from
    its ``users.properties`` (``name=password`` lines) and CA certificate."""
    passwords = read_users(users)
    if user not in passwords:
        raise KeyError(f"no user {user!r} in {users} (users: {', '.join(passwords)})")
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": passwords[user],
        "ssl.ca.location": str(ca),
    }


def read_users(path: Path) -> dict[str, str]:
    """``name=password`` lines (``#`` comments and blank lines skipped)."""
    users: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, password = line.split("=", 1)
            users[name.strip()] = password.strip()
    return users


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flwire.transport.kafka_acl",
        description="Create a flwire job's topics and grant its Kafka ACLs (as an admin user).",
    )
    parser.add_argument("clients", nargs="*", help="client user names (e.g. client-1 client-2)")
    parser.add_argument("--job", required=True, help="the job id (topics flwire.<job>.*)")
    parser.add_argument("--server", default="server", help="the server's user name")
    parser.add_argument("--prefix", default=TopicLayout.prefix, help="topic prefix")
    parser.add_argument("--bootstrap", default="127.0.0.1:9094", help="bootstrap servers")
    parser.add_argument("--users", type=Path, help="kafka/broker.sh's users.properties")
    parser.add_argument("--ca", type=Path, help="CA certificate (with --users)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of new topics")
    parser.add_argument("--no-create-topics", action="store_true", help="only the ACLs")
    parser.add_argument("--print", action="store_true", help="list the ACLs; change nothing")
    args = parser.parse_args(argv)
    layout = TopicLayout(args.job, prefix=args.prefix)
    try:
        grants = job_grants(layout, args.server, args.clients)
    except ValueError as exc:
        parser.error(str(exc))
    if args.print:
        print("\n".join(g.line() for g in grants))
        return 0
    from flwire.exceptions import CommunicationException
    from flwire.transport.kafka_security import security_settings

    if args.users is not None:
        if args.ca is None:
            parser.error("--users needs --ca")
        config: dict[str, Any] = users_file_config(args.users, args.ca)
    else:
        config = security_settings()
    try:
        apply(
            {"bootstrap.servers": args.bootstrap, **config},
            layout,
            grants,
            create_topics=not args.no_create_topics,
            num_partitions=args.partitions,
        )
    except CommunicationException as exc:
        print(f"kafka_acl: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"job {args.job}: topics {', '.join(layout.all)}; {len(grants)} ACLs for "
        f"{args.server} (server) and {len(args.clients)} client(s): {', '.join(args.clients)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
