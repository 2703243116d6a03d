"""The demo FL job over the real broker, clients as separate processes."""

from __future__ import annotations

import io
import json

from flwire.demo.runner import DemoOptions, run_demo


def test_demo_over_kafka(bootstrap: str, tmp_path) -> None:
    out = io.StringIO()
    opts = DemoOptions(
        clients=2,
        rounds=2,
        learning_rate=0.01,
        local_epochs=2,
        bootstrap_servers=bootstrap,
        report_dir=tmp_path,
    )
    status = run_demo(opts, out)
    text = out.getvalue()
    assert status == 0, text
    report = json.loads((tmp_path / "demo-report.json").read_text())
    assert report["transport"] == "kafka"
    rounds = report["rounds"]
    assert [sorted(r["reporting"]) for r in rounds] == [["client-0", "client-1"]] * 2
    assert rounds[1]["accuracy"] > rounds[0]["accuracy"] > 0.2
    assert all(r["federated_accuracy"] is not None for r in rounds)
    # Client updates (~4.4 MB) crossed a broker left at its 1 MB default limit.
    assert all(r["wire_bytes"] > 3 * 4.0e6 for r in rounds)
    print(f"\n{text}")
