"""Planted bugs, for the fuzz test's own test: proof that the harness catches
each kind of failure and says which input caused it.

``install(names)`` wraps the ``read_tensor_map`` the tensor-map target calls so
that it misbehaves on some inputs (those whose length is a multiple of 3),
one plant per such input, in the order given: ``raise`` (a ValueError),
``grow`` (256 MB touched and held during the call: over the RSS cap),
``alloc`` (4 GiB: over the address-space cap, a MemoryError) and ``sleep``
(60 s: the watchdog). Never used outside that test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import targets

PLANTS = ("raise", "grow", "alloc", "sleep")


def _misbehave(name: str) -> None:
    if name == "raise":
        raise ValueError("planted bug")
    if name == "grow":
        held = np.ones(256 << 20, np.uint8)
        del held
    elif name == "alloc":
        np.ones(4 << 30, np.uint8)
    elif name == "sleep":
        time.sleep(60)


def install(names: list[str]) -> None:
    pending = list(names)
    original: Callable[..., Any] = targets.read_tensor_map

    def planted_read_tensor_map(data: Any, **options: Any) -> Any:
        if pending and len(data) % 3 == 0:
            _misbehave(pending.pop(0))
        return original(data, **options)

    targets.read_tensor_map = planted_read_tensor_map
