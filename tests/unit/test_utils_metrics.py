"""MetricsCollector: recorded values, summaries, system metrics, export and wire metrics."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flwire.compat.utils.metrics import MetricsCollector

SUMMARY_KEYS = {"count", "mean", "median", "min", "max", "std"}


def test_record_metric_with_explicit_timestamp():
    mc = MetricsCollector()
    mc.record_metric("loss", 0.5, timestamp=100.0)
    mc.record_metric("loss", 0.25, timestamp=101.0)
    assert mc.metrics["loss"] == [
        {"value": 0.5, "timestamp": 100.0},
        {"value": 0.25, "timestamp": 101.0},
    ]


def test_record_metric_default_timestamp_is_now():
    mc = MetricsCollector()
    before = time.time()
    mc.record_metric("acc", 0.9)
    after = time.time()
    (entry,) = mc.metrics["acc"]
    assert entry["value"] == 0.9
    assert before <= entry["timestamp"] <= after


def test_record_metric_timestamp_zero_is_kept():
    mc = MetricsCollector()
    mc.record_metric("x", 1, timestamp=0.0)
    assert mc.metrics["x"][0]["timestamp"] == 0.0


def test_summary_numbers():
    mc = MetricsCollector()
    for value in [1.0, 2.0, 3.0, 4.0, 10.0]:
        mc.record_metric("loss", value)
    summary = mc.get_metric_summary("loss")
    assert set(summary) == SUMMARY_KEYS
    assert summary["count"] == 5
    assert summary["mean"] == pytest.approx(4.0)
    assert summary["median"] == 3.0
    assert summary["min"] == 1.0
    assert summary["max"] == 10.0
    assert summary["std"] == pytest.approx(statistics.stdev([1.0, 2.0, 3.0, 4.0, 10.0]))


def test_summary_of_one_value_has_zero_std():
    mc = MetricsCollector()
    mc.record_metric("x", 7)
    assert mc.get_metric_summary("x") == {
        "count": 1,
        "mean": 7,
        "median": 7,
        "min": 7,
        "max": 7,
        "std": 0,
    }


def test_summary_of_even_count_median():
    mc = MetricsCollector()
    for value in [4, 1, 3, 2]:
        mc.record_metric("x", value)
    assert mc.get_metric_summary("x")["median"] == 2.5


def test_summary_unknown_metric_is_empty():
    mc = MetricsCollector()
    assert mc.get_metric_summary("nope") == {}
    mc.record_metric("other", 1)
    assert mc.get_metric_summary("nope") == {}
    # Asking does not create the metric.
    assert "nope" not in mc.export_metrics()["metrics"]


@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=40,
    )
)
def test_summary_matches_statistics(values):
    mc = MetricsCollector()
    for v in values:
        mc.record_metric("m", v)
    summary = mc.get_metric_summary("m")
    assert summary["count"] == len(values)
    assert summary["mean"] == pytest.approx(statistics.mean(values), rel=1e-9, abs=1e-9)
    assert summary["median"] == pytest.approx(statistics.median(values), rel=1e-9, abs=1e-9)
    assert summary["min"] == min(values)
    assert summary["max"] == max(values)
    expected_std = statistics.stdev(values) if len(values) > 1 else 0
    assert summary["std"] == pytest.approx(expected_std, rel=1e-9, abs=1e-9)


@given(st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=30))
def test_summary_of_ints_matches_statistics(values):
    mc = MetricsCollector()
    for v in values:
        mc.record_metric("m", v)
    summary = mc.get_metric_summary("m")
    assert summary["mean"] == pytest.approx(statistics.mean(values))
    assert summary["median"] == pytest.approx(statistics.median(values))
    assert (summary["min"], summary["max"]) == (min(values), max(values))


def test_system_metrics_keys_and_types():
    metrics = MetricsCollector().get_system_metrics()
    assert set(metrics) == {
        "cpu_percent",
        "memory_percent",
        "memory_available",
        "disk_usage",
        "gpu_memory",
    }
    assert isinstance(metrics["cpu_percent"], float)
    assert 0.0 <= metrics["memory_percent"] <= 100.0
    assert isinstance(metrics["memory_available"], int) and metrics["memory_available"] > 0
    assert 0.0 <= metrics["disk_usage"] <= 100.0
    if torch.cuda.is_available():
        assert set(metrics["gpu_memory"]) == {"allocated", "cached", "total"}
    else:
        assert metrics["gpu_memory"] is None


def test_system_metrics_gpu_none_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert MetricsCollector().get_system_metrics()["gpu_memory"] is None


def test_system_metrics_gpu_dict_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 11)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a, **k: 22)

    class Props:
        total_memory = 33

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a, **k: Props())
    assert MetricsCollector().get_system_metrics()["gpu_memory"] == {
        "allocated": 11,
        "cached": 22,
        "total": 33,
    }


def test_export_keys_and_contents():
    mc = MetricsCollector()
    mc.record_metric("loss", 1.0, timestamp=1.0)
    mc.record_metric("loss", 3.0, timestamp=2.0)
    exported = mc.export_metrics()
    assert set(exported) == {"collection_duration", "metrics", "summaries", "wire"}
    assert isinstance(exported["collection_duration"], float)
    assert exported["collection_duration"] >= 0
    assert exported["metrics"] == {
        "loss": [{"value": 1.0, "timestamp": 1.0}, {"value": 3.0, "timestamp": 2.0}]
    }
    assert type(exported["metrics"]) is dict
    assert exported["summaries"]["loss"] == mc.get_metric_summary("loss")
    assert exported["summaries"]["loss"]["mean"] == 2.0
    assert exported["wire"] == mc.wire_summary()


def test_export_skips_summaries_of_non_numeric_metrics():
    mc = MetricsCollector()
    mc.record_metric("status", "ok")
    mc.record_metric("acc", 0.5)
    exported = mc.export_metrics()
    assert exported["metrics"]["status"][0]["value"] == "ok"
    assert "status" not in exported["summaries"]
    assert "acc" in exported["summaries"]


def test_export_empty_collector():
    exported = MetricsCollector().export_metrics()
    assert exported["metrics"] == {}
    assert exported["summaries"] == {}
    assert exported["wire"]["bytes_sent"] == 0


def test_collection_duration_grows(monkeypatch):
    mc = MetricsCollector()
    monkeypatch.setattr(time, "time", lambda: mc.start_time + 12.5)
    assert mc.export_metrics()["collection_duration"] == pytest.approx(12.5)


# ----------------------------------------------------------------------------- wire metrics


def test_wire_summary_empty():
    assert MetricsCollector().wire_summary() == {
        "bytes_sent": 0,
        "bytes_received": 0,
        "compression_ratio": None,
        "encode_seconds_per_message": 0.0,
        "decode_seconds_per_message": 0.0,
    }


def test_wire_summary_totals_and_ratio():
    mc = MetricsCollector()
    mc.record_wire("sent", 100, raw_bytes=400, seconds=0.01)
    mc.record_wire("sent", 300, raw_bytes=600, seconds=0.03)
    mc.record_wire("received", 50, raw_bytes=200, seconds=0.02)
    mc.record_wire("received", 30, raw_bytes=100, seconds=0.04)
    summary = mc.wire_summary()
    assert summary["bytes_sent"] == 400
    assert summary["bytes_received"] == 80
    assert summary["compression_ratio"] == pytest.approx(480 / 1300)
    assert summary["encode_seconds_per_message"] == pytest.approx(0.02)
    assert summary["decode_seconds_per_message"] == pytest.approx(0.03)


def test_wire_summary_sent_only():
    mc = MetricsCollector()
    mc.record_wire("sent", 250, raw_bytes=1000, seconds=0.5)
    summary = mc.wire_summary()
    assert (summary["bytes_sent"], summary["bytes_received"]) == (250, 0)
    assert summary["compression_ratio"] == pytest.approx(0.25)
    assert summary["encode_seconds_per_message"] == pytest.approx(0.5)
    assert summary["decode_seconds_per_message"] == 0.0


def test_wire_without_raw_bytes_has_no_ratio():
    mc = MetricsCollector()
    mc.record_wire("received", 10)
    summary = mc.wire_summary()
    assert summary["bytes_received"] == 10
    assert summary["compression_ratio"] is None


def test_wire_metrics_are_recorded_as_metrics():
    mc = MetricsCollector()
    mc.record_wire("sent", 100, raw_bytes=400, seconds=0.01)
    assert mc.get_metric_summary("wire.sent.bytes")["count"] == 1
    exported = mc.export_metrics()
    assert exported["wire"]["bytes_sent"] == 100
    assert exported["wire"]["compression_ratio"] == pytest.approx(0.25)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["sent", "received"]),
            st.integers(min_value=0, max_value=10**9),
            st.integers(min_value=0, max_value=10**9),
        ),
        max_size=20,
    )
)
def test_wire_totals_property(records):
    mc = MetricsCollector()
    for direction, wire, raw in records:
        mc.record_wire(direction, wire, raw_bytes=raw)
    summary = mc.wire_summary()
    assert summary["bytes_sent"] == sum(w for d, w, _ in records if d == "sent")
    assert summary["bytes_received"] == sum(w for d, w, _ in records if d == "received")
    raw_total = sum(r for _, _, r in records)
    if raw_total:
        wire_total = sum(w for _, w, _ in records)
        assert summary["compression_ratio"] == pytest.approx(wire_total / raw_total)
    else:
        assert summary["compression_ratio"] is None


@pytest.mark.parametrize("direction", ["send", "SENT", "in", ""])
def test_wire_invalid_direction(direction):
    mc = MetricsCollector()
    with pytest.raises(ValueError, match="direction"):
        mc.record_wire(direction, 10)
    assert mc.wire_summary()["bytes_sent"] == 0
    assert dict(mc.metrics) == {}
