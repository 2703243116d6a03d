"""The end-to-end Kafka benchmark's run settings, its error for a person, and its log line."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any


class BenchError(Exception):
    """A failure explained for a person; printed without a traceback."""


def log(msg: str) -> None:
    """A progress line on stderr (the tables go to stdout)."""
    print(f"[e2e] {msg}", file=sys.stderr, flush=True)


@dataclass
class Settings:
    clients: int
    rounds: int
    warmup: int
    big: str  # "full", "quick" or "none"
    old_big: bool
    wait_s: float  # longest wait for any one message
    quick: bool
    #: Extra transport tuning for flwire (empty: the SDK's defaults).
    flwire_options: dict[str, Any] = field(default_factory=dict)
