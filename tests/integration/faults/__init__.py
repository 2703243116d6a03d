"""Fault scenarios on a real Kafka broker (issue 11: "nothing lost, nothing twice").

Each scenario in :mod:`.scenarios` runs ONE iteration against a private broker it
may kill and restart, and returns an :class:`~.common.Outcome` whose verdict is
``exactly_once``, ``lost``, ``duplicated``, ``hung`` or ``error``. The verdict
compares the message ids the senders saw acknowledged with the effects the
receiving processes recorded (one line per handled message, fsynced), and for
the log-level scenarios also reads the topic back from the broker.

- ``server.py``: a receiving process (``python -m tests.integration.faults.server``);
- ``client.py``: a sending process (``python -m tests.integration.faults.client``);
- ``common.py``: what both sides and the scenarios share (no torch import);
- ``scenarios.py``: the seven scenarios;
- ``__main__.py``: ``python -m tests.integration.faults --runs N`` prints a table.

``tests/integration/test_kafka_faults.py`` runs every scenario under pytest.
"""
