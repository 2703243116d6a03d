"""One phase of the plan as a server side (e2e_flwire, e2e_old) sees it: the settings, the
phase's topics, the client processes and the weights it should decode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2e_processes import ClientProcesses
from e2e_results import Expected
from e2e_settings import Settings

from flwire.communication.transport import TopicLayout


@dataclass
class ServerPhase:
    st: Settings
    name: str
    layout: TopicLayout
    with_big: bool  # also run scenario B in this phase
    clients: ClientProcesses
    expected: Expected

    @classmethod
    def of(
        cls, st: Settings, phase: dict[str, Any], clients: ClientProcesses, expected: Expected
    ) -> ServerPhase:
        """From a phase of the plan (name, job, big)."""
        layout = TopicLayout(phase["job"])
        return cls(st, phase["name"], layout, bool(phase["big"]), clients, expected)
