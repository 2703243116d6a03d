"""The many-clients load benchmark's plumbing (benchmarks.e2e.load) at a tiny size on the
broker under test: 4 clients in 2 processes, a 1.4 MB model (2 records an update), once.
Nothing here is timed: the checks are that every update is sent, received and folded into
the right average, and that the raw path moves the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.e2e import load
from benchmarks.e2e.load_worker import model
from benchmarks.models import raw_size

CLIENTS = 4


def test_load_scenario_folds_every_update_and_moves_the_same_bytes_raw(
    bootstrap: str, tmp_path: Path
) -> None:
    out = tmp_path / "load.json"
    argv = ["--bootstrap", bootstrap, "--clients", str(CLIENTS), "--procs", "2", "--reps", "1"]
    # A 1 MB memory cap on the server's reassembler: updates under way past it wait in
    # the spill file, and the average is still right.
    assert load.main([*argv, "--model", "tiny", "--memory-mb", "1", "--json", str(out)]) == 0

    doc = json.loads(out.read_text())
    (rep,) = doc["reps"]
    assert rep["clients"] == CLIENTS
    # Each update went in parts (the model is above the 1 MB record limit), the server
    # received every byte the clients sent, and the raw path moved the same bytes.
    assert raw_size(model("tiny")) > 1_000_000
    assert rep["records"] == 2 * CLIENTS
    assert rep["bytes"] == rep["sent_bytes"] > 0
    assert rep["raw_bytes"] == rep["sent_bytes"]
    # The server folded every client's update into the weighted average.
    assert rep["max_error"] < 1e-6
    # Latencies are within the round, which is within the run.
    assert 0 < rep["latency_p50_s"] <= rep["latency_p99_s"] <= rep["wall_s"]
    assert rep["raw_wall_s"] > 0
    assert rep["rss_growth"] is None or rep["rss_growth"] >= 0
    assert doc["settings"]["server_memory_mb"] == 1
    assert rep["memory_peak"] <= 1_000_000
    assert rep["pending_peak"] >= rep["spilled_peak"] >= 0
