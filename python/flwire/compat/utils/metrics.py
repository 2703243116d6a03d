"""MetricsCollector: training, system and wire metrics (mirrors ``common.utils.metrics``)."""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from flwire import _optional


class MetricsCollector:
    """Collects metric values over time and summarises them.

    Besides the old API, it records wire metrics: :meth:`record_wire` for each
    message sent or received (bytes, raw bytes, encode/decode seconds), and
    :meth:`wire_summary` for totals and the compression ratio.
    """

    def __init__(self) -> None:
        self.metrics: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.start_time = time.time()

    def record_metric(self, name: str, value: Any, timestamp: float | None = None) -> None:
        """Record one value of a metric."""
        self.metrics[name].append(
            {"value": value, "timestamp": time.time() if timestamp is None else timestamp}
        )

    def get_system_metrics(self) -> dict[str, Any]:
        """CPU, memory, disk, and GPU memory when a GPU is present."""
        psutil = _optional.require("psutil")
        memory = psutil.virtual_memory()
        return {
            "cpu_percent": psutil.cpu_percent(),
            "memory_percent": memory.percent,
            "memory_available": memory.available,
            "disk_usage": psutil.disk_usage("/").percent,
            "gpu_memory": self._get_gpu_memory(),
        }

    def _get_gpu_memory(self) -> dict[str, Any] | None:
        torch = sys.modules.get("torch")  # a process without torch has no torch GPU memory
        if torch is None or not torch.cuda.is_available():
            return None
        return {
            "allocated": torch.cuda.memory_allocated(),
            "cached": torch.cuda.memory_reserved(),
            "total": torch.cuda.get_device_properties(0).total_memory,
        }

    def get_metric_summary(self, name: str) -> dict[str, float]:
        """count, mean, median, min, max, std of a numeric metric ({} if unknown)."""
        if name not in self.metrics:
            return {}
        values = [m["value"] for m in self.metrics[name]]
        return {
            "count": len(values),
            "mean": statistics.mean(values),
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0,
        }

    def export_metrics(self) -> dict[str, Any]:
        """Everything recorded, with summaries of the numeric metrics."""
        return {
            "collection_duration": time.time() - self.start_time,
            "metrics": dict(self.metrics),
            "summaries": {
                name: self.get_metric_summary(name)
                for name, entries in self.metrics.items()
                if all(isinstance(e["value"], (int, float)) for e in entries)
            },
            "wire": self.wire_summary(),
        }

    def record_wire(
        self,
        direction: str,
        wire_bytes: int,
        raw_bytes: int = 0,
        seconds: float = 0.0,
    ) -> None:
        """One message sent (``direction="sent"``, seconds spent encoding) or
        received (``"received"``, seconds spent decoding)."""
        if direction not in ("sent", "received"):
            raise ValueError("direction must be 'sent' or 'received'")
        self.record_metric(f"wire.{direction}.bytes", wire_bytes)
        self.record_metric(f"wire.{direction}.raw_bytes", raw_bytes)
        codec_time = "encode" if direction == "sent" else "decode"
        self.record_metric(f"wire.{codec_time}_seconds", seconds)

    def wire_summary(self) -> dict[str, Any]:
        """Bytes sent/received, compression ratio (wire / raw tensor bytes) and
        mean encode/decode seconds per message."""

        def total(name: str) -> int:
            return int(sum(e["value"] for e in self.metrics.get(name, [])))

        def mean(name: str) -> float:
            entries = self.metrics.get(name, [])
            return statistics.mean(e["value"] for e in entries) if entries else 0.0

        raw = total("wire.sent.raw_bytes") + total("wire.received.raw_bytes")
        wire = total("wire.sent.bytes") + total("wire.received.bytes")
        return {
            "bytes_sent": total("wire.sent.bytes"),
            "bytes_received": total("wire.received.bytes"),
            "compression_ratio": wire / raw if raw else None,
            "encode_seconds_per_message": mean("wire.encode_seconds"),
            "decode_seconds_per_message": mean("wire.decode_seconds"),
        }
