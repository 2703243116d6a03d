"""A job's Kafka ACLs, derived from the schema's routing (flwire.transport.kafka_acl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flwire.messages.schema import BODY_TYPES
from flwire.transport import FailurePolicy, TopicLayout, kafka_acl
from flwire.transport.kafka_acl import Grant

LAYOUT = TopicLayout("job7")


def allowed(grants: list[Grant], user: str, operation: str, resource: str = "topic") -> set[str]:
    return {
        g.name
        for g in grants
        if g.principal == f"User:{user}" and g.operation == operation and g.resource == resource
    }


def test_each_role_writes_the_topics_of_what_it_sends_and_reads_the_others() -> None:
    grants = kafka_acl.job_grants(LAYOUT, "server", ["client-1"])
    for body in BODY_TYPES.values():
        if body.sender == "any":
            continue  # custom messages: their sender names the topic
        topic = LAYOUT.topic(body.topic)
        if body.sender == "aggregator":  # the server side's own topic: no client near it
            assert topic in allowed(grants, "server", "write"), body.name
            assert topic in allowed(grants, "server", "read"), body.name
            assert topic not in allowed(grants, "client-1", "read"), body.name
            assert topic not in allowed(grants, "client-1", "write"), body.name
            continue
        sender = "server" if body.sender == "server" else "client-1"
        receiver = "client-1" if body.sender == "server" else "server"
        assert topic in allowed(grants, sender, "write"), body.name
        assert topic in allowed(grants, receiver, "read"), body.name
        assert topic not in allowed(grants, receiver, "write"), body.name


def test_the_exact_model() -> None:
    grants = kafka_acl.job_grants(LAYOUT, "srv", ["c1", "c2"])
    job = "flwire.job7"
    assert allowed(grants, "c1", "write") == {
        f"{job}.updates",
        f"{job}.control",
        f"{job}.client.c1.seen",
        f"{job}.broadcast.dead-letter",
    }
    assert allowed(grants, "c1", "read") == {f"{job}.broadcast", f"{job}.client.c1.seen"}
    assert allowed(grants, "c1", "read", "group") == {f"{job}.client.c1", "flwire.read-topic."}
    assert allowed(grants, "c1", "create") == {
        f"{job}.client.c1.seen",
        f"{job}.broadcast.dead-letter",
    }
    assert allowed(grants, "srv", "write") == {
        f"{job}.broadcast",
        f"{job}.aggregates",
        f"{job}.server.seen",
        f"{job}.updates.dead-letter",
        f"{job}.control.dead-letter",
        f"{job}.aggregates.dead-letter",
    }
    assert allowed(grants, "srv", "read") == {
        f"{job}.updates",
        f"{job}.control",
        f"{job}.aggregates",
        f"{job}.server.seen",
    }
    assert allowed(grants, "srv", "read", "group") == {
        f"{job}.server",
        f"{job}.aggregators",
        "flwire.read-topic.",
    }
    # The scale-out aggregators' transactions (flwire.aggregation.scaleout).
    for op in ("write", "describe"):
        assert allowed(grants, "srv", op, "transactional_id") == {f"{job}.aggregator."}
    assert not [g for g in grants if g.resource == "transactional_id" and "c1" in g.principal]
    assert set(LAYOUT.all) <= allowed(grants, "srv", "create")
    assert f"{job}.aggregates" in LAYOUT.all
    # Only the read-topic groups and the transactional ids are a prefix.
    assert {g.name for g in grants if g.pattern == "prefixed"} == {
        "flwire.read-topic.",
        f"{job}.aggregator.",
    }
    # No grant names another client's resources.
    assert not [g for g in grants if g.principal == "User:c1" and ".c2" in g.name]


def test_dead_letter_topics_follow_the_policy_and_duplicates_collapse() -> None:
    grants = kafka_acl.job_grants(
        LAYOUT, "srv", ["c1", "c1"], FailurePolicy(dead_letter_suffix=None)
    )
    assert not [g for g in grants if "dead-letter" in g.name]
    assert len(grants) == len(set(grants))


@pytest.mark.parametrize(("server", "clients"), [("", ["c"]), ("s", ["c", ""]), ("s", ["s"])])
def test_bad_user_lists_are_refused(server: str, clients: list[str]) -> None:
    with pytest.raises(ValueError):
        kafka_acl.job_grants(LAYOUT, server, clients)


def test_users_file(tmp_path: Path) -> None:
    users = tmp_path / "users.properties"
    users.write_text("# comment\nadmin=a1=b\n\nclient-1 = pw1\n", encoding="utf-8")
    assert kafka_acl.read_users(users) == {"admin": "a1=b", "client-1": "pw1"}
    config = kafka_acl.users_file_config(users, tmp_path / "ca.crt", "client-1")
    assert config["sasl.password"] == "pw1"
    assert config["security.protocol"] == "SASL_SSL"
    with pytest.raises(KeyError, match="server"):
        kafka_acl.users_file_config(users, tmp_path / "ca.crt", "server")


def test_print_lists_the_acls_without_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert kafka_acl.main(["--job", "j", "--print", "c1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ALLOW User:c1 write topic flwire.j.updates" in lines
    assert "ALLOW User:server read group flwire.read-topic.*" in lines
    assert len(lines) == len(kafka_acl.job_grants(TopicLayout("j"), "server", ["c1"]))
