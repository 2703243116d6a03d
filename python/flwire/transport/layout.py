"""The topics and consumer groups of one FL job."""

from __future__ import annotations

from dataclasses import dataclass

from flwire.messages.schema import ANY, TOPIC_NAMES, body_type


@dataclass(frozen=True)
class TopicLayout:
    """The topics of one FL job, named from its job id.

    - ``broadcast``: server -> clients (global updates, training start,
      evaluation requests, shutdown); every client reads all of it.
    - ``updates``: clients -> server (client updates, evaluation results).
    - ``control``: clients -> server (registration, heartbeats).
    - ``aggregates``: the server side's aggregators -> the server (partial
      aggregates, scale-out: :mod:`flwire.aggregation.scaleout`); clients
      neither read nor write it.
    """

    job_id: str
    prefix: str = "flwire"

    def topic(self, name: str) -> str:
        """The Kafka topic of one of the schema's topics (``flwire.v1.Topic``:
        ``broadcast``, ``updates``, ``control``, ``aggregates``)."""
        if name not in self.names:
            raise ValueError(
                f"unknown topic {name!r}; the schema's topics: {', '.join(self.names)}"
            )
        return f"{self.prefix}.{self.job_id}.{name}"

    @property
    def names(self) -> tuple[str, ...]:
        """The schema's topic names, in enum order."""
        return tuple(n for n in TOPIC_NAMES.values() if n not in ("unspecified", ANY))

    @property
    def broadcast(self) -> str:
        return self.topic("broadcast")

    @property
    def updates(self) -> str:
        return self.topic("updates")

    @property
    def control(self) -> str:
        return self.topic("control")

    @property
    def aggregates(self) -> str:
        return self.topic("aggregates")

    @property
    def all(self) -> tuple[str, ...]:
        """Every topic of the job, in the schema's enum order."""
        return tuple(self.topic(n) for n in self.names)

    def for_message(self, message_type: str) -> str:
        """The topic a message type travels on, as its schema declares it
        (``option (flwire.v1.message).topic`` in messages.proto). A custom
        message travels on the topic its sender names: ValueError."""
        topic = body_type(message_type).topic
        if topic == ANY:
            raise ValueError(
                f"{message_type} messages have no topic of their own: send them to the "
                f"topic your application reads them from (e.g. layout.control)"
            )
        return self.topic(topic)

    def server_group(self) -> str:
        return f"{self.prefix}.{self.job_id}.server"

    def aggregator_group(self) -> str:
        """The consumer group of the scale-out aggregators (they share ``updates``)."""
        return f"{self.prefix}.{self.job_id}.aggregators"

    def aggregator_transaction(self, aggregator_id: str) -> str:
        """The ``transactional.id`` of one scale-out aggregator."""
        return f"{self.prefix}.{self.job_id}.aggregator.{aggregator_id}"

    def client_group(self, client_id: str) -> str:
        return f"{self.prefix}.{self.job_id}.client.{client_id}"
