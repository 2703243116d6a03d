"""The streaming benchmark's plumbing (benchmarks.e2e.stream, the last part of `make
bench`) at a small size on the broker under test: the ~41 MB stand-in model, one pair
after the warm-up, and a 70 MB bfloat16 model. Nothing here is timed: the checks are
that both flwire streams arrive bit for bit, that the raw paths move as many bytes (the
filling one copying them all), and that every figure the tables are made of was taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.e2e import stream
from benchmarks.models import big_model, raw_size


def test_stream_benchmark_moves_the_model_exactly_and_measures_each_side(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stream.json"
    argv = ["--bootstrap", bootstrap, "--quick", "--pairs", "1", "--big-bf16", "7e7"]
    assert stream.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out

    (pair,) = json.loads(out.read_text())["quiet"]
    model_bytes = raw_size(big_model(quick=True))
    raw = pair["raw"]
    assert raw["bytes"] >= model_bytes and raw["records"] == raw["bytes"] // 1_000_000
    assert raw["filled_bytes"] == 0
    filled = pair["fill"]  # raw + fill: every byte consumed copied into fresh memory
    assert filled["filled_bytes"] == filled["bytes"] == raw["bytes"]
    assert filled["t_first_record"] <= filled["t_last_record"] and pair["ratio_fill"] > 0
    for codec in ("zstd", "none"):
        got = pair[codec]
        assert got["exact"] is True, f"{codec}: decoded weights differ from those sent"
        assert got["model_bytes"] == model_bytes
        # The head, at least one record a MB, the seal.
        assert got["records"] >= model_bytes // 1_000_000 + 2
        assert got["t0"] <= got["t_first_send"] <= got["t_done"]
        assert got["t_first_record"] <= got["t_last_record"] <= got["t_decoded"]
        assert got["send_cpu_s"] > 0 and got["recv_cpu_s"] > 0
        assert pair[f"ratio_{codec}"] > 0
    assert "vs raw" in printed and "raw + fill" in printed
    assert "bfloat16 model of 0.07 GB" in printed
