"""BroadcastModels without a broker: what ``models(round)`` returns and how long
it waits (the feed thread that reads the broadcast topic is tested on the real
broker, in tests/integration/test_scaleout_kafka.py)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from flwire.aggregation.models import BroadcastModels
from flwire.transport import TopicLayout

CONFIG = {"bootstrap.servers": "127.0.0.1:1"}


def state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2,), value)}


def test_a_round_s_model_is_returned_once_it_is_read() -> None:
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=10)
    timer = threading.Timer(0.2, models.put, (3, state(3.0)))
    timer.start()
    started = time.monotonic()
    got = models(3)
    waited = time.monotonic() - started
    timer.join()
    assert got is not None and torch.equal(got["w"], state(3.0)["w"])
    assert waited < 5  # woken by the put, not by the 10 s bound


def test_a_model_never_read_gives_none_after_wait_s(caplog: pytest.LogCaptureFixture) -> None:
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=0.1)
    models.put(1, state(1.0))
    assert models(2) is None
    assert "No global model of round 2 read from flwire.j.broadcast within 0 s" in caplog.text
    assert "(held: [1])" in caplog.text


def test_only_the_latest_rounds_are_held() -> None:
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=0, keep=2)
    for r in (1, 2, 3):
        models.put(r, state(float(r)))
    assert models.rounds() == [2, 3]
    assert models(1) is None
    models.put(2, state(20.0))  # read again (a re-sent broadcast): the latest wins
    assert models.rounds() == [3, 2]
    got = models(2)
    assert got is not None and float(got["w"][0]) == 20.0


def test_closing_wakes_a_waiting_caller() -> None:
    models = BroadcastModels(CONFIG, TopicLayout("j"), wait_s=30)
    threading.Timer(0.2, models.close).start()
    started = time.monotonic()
    assert models(1) is None
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("config", "kwargs"),
    [({}, {}), (CONFIG, {"wait_s": -1}), (CONFIG, {"keep": 0})],
)
def test_bad_settings_are_refused(config: dict[str, str], kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BroadcastModels(config, TopicLayout("j"), **kwargs)  # type: ignore[arg-type]
