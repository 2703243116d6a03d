"""Old-API payload dicts round trip through ``MessageSerializer`` with their types."""

from __future__ import annotations

from helpers import values_equal
from hypothesis import given
from hypothesis import strategies as st
from strategies import py_values

from flwire.compat.serialization.message_serializer import MessageSerializer

values = py_values(max_leaves=10, max_size=3)
TRAINING_START_KEYS = {"round_id", "config", "client_ids"}
# Keys the schema has no field for: kept in the envelope's extensions. "weights"
# is the payload key of a message's tensors, refused as an extension
# (test_message_serializer.py: test_a_weights_key_on_a_message_without_weights_is_refused).
extras = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in TRAINING_START_KEYS | {"weights"}),
    values,
    max_size=5,
)


@given(
    round_id=st.integers(0, 2**62),
    config=st.dictionaries(st.text(max_size=8), values, min_size=1, max_size=4),
    client_ids=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3),
    extra=extras,
    sender=st.none() | st.text(min_size=1, max_size=8),
)
def test_training_start_payload_round_trip(round_id, config, client_ids, extra, sender):
    # Empty config / client_ids are left out here: see
    # tests/unit/test_message_serializer.py::test_empty_known_values_are_not_dropped.
    payload = {"round_id": round_id, "config": config, "client_ids": client_ids, **extra}
    raw = MessageSerializer.serialize_message("training_start", payload, sender_id=sender)
    out = MessageSerializer.deserialize_message(raw)
    assert out["type"] == "training_start"
    assert out["sender_id"] == sender
    assert out["version"] == "1.2"
    assert values_equal(out["payload"], payload)


@given(extra=extras)
def test_training_start_extras_only(extra):
    payload = {"round_id": 0, **extra}
    out = MessageSerializer.deserialize_message(
        MessageSerializer.serialize_message("training_start", payload)
    )
    # The known fields config and client_ids always come back, empty if not sent.
    assert values_equal(out["payload"], {"config": {}, "client_ids": [], **payload})


@given(
    client_id=st.text(min_size=1, max_size=8),
    round_id=st.integers(0, 2**62),
    metrics=st.dictionaries(st.text(max_size=8), values, max_size=4),
)
def test_evaluation_result_payload_round_trip(client_id, round_id, metrics):
    payload = {"client_id": client_id, "round_id": round_id, "metrics": metrics}
    out = MessageSerializer.deserialize_message(
        MessageSerializer.serialize_message("evaluation_result", payload, sender_id=client_id)
    )
    assert out["type"] == "evaluation_result"
    # num_examples carries a rule (non_negative), so it always comes back: 0 when not sent.
    assert values_equal(out["payload"], {**payload, "num_examples": 0})
