"""What the scale-out tests share (importable as ``scaleout_tools``: tests/ is
on the path): a reference model, clients with known weights and example
counts, their updates as one partition's records, and an intake over them."""

from __future__ import annotations

import torch

from flwire import messages as m
from flwire.aggregation.intake import Intake
from flwire.tensors import EncodeOptions
from flwire.transport.base import Record
from flwire.transport.chunking import PART_HEADER, split_payload

TOPIC = "flwire.j.updates"
TP = (TOPIC, 0)
Headers = list[tuple[str, bytes]]
REFERENCE = {"w": torch.zeros(40, 30), "steps": torch.tensor(0, dtype=torch.int64)}
COUNTS = {"a": 300, "b": 200, "c": 100, "d": 50}


def weights(client: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(ord(client))
    return {"w": torch.randn(40, 30, generator=g), "steps": torch.tensor(ord(client))}


def records(client: str, *, round_id: int = 1) -> list[tuple[bytes, Headers]]:
    """The (value, headers) of a client's update, split into parts of 1,500 bytes."""
    msg = m.client_update(
        client,
        round_id,
        weights(client),
        num_examples=COUNTS[client],
        options=EncodeOptions(compression="none"),
    )
    return keyed(
        client,
        [
            (part, [(PART_HEADER, f"{i}/{n}".encode())])
            for part, i, n in split_payload(msg.to_bytes(), msg.message_id, 1500)
        ],
    )


#: The client of each record value made here: clients key their records by
#: client id, and the intake refuses an update whose records are keyed otherwise.
_CLIENT_OF: dict[bytes, str] = {}


def keyed(client: str, recs: list[tuple[bytes, Headers]]) -> list[tuple[bytes, Headers]]:
    """``recs``, noted as ``client``'s (:func:`key_of` gives their key)."""
    for value, _headers in recs:
        _CLIENT_OF[bytes(value)] = client
    return recs


def key_of(value: bytes) -> bytes:
    """The record key of a value made by :func:`records` or :func:`keyed`."""
    return _CLIENT_OF[bytes(value)].encode("utf-8")


def interleave(*updates: list[tuple[bytes, Headers]]) -> list[Record]:
    """The parts of several updates as one partition's records, in the given
    shape: ``updates[0]``'s first part, then everything of the others, then
    the rest of ``updates[0]`` (an update still incomplete below complete ones)."""
    first, *others = updates
    order = [first[0]] + [r for u in others for r in u] + first[1:]
    return [Record(TOPIC, 0, offset, key_of(v), v, h) for offset, (v, h) in enumerate(order)]


def intake(**kwargs: object) -> Intake:
    return Intake(lambda r: REFERENCE if r == 1 else None, **kwargs)  # type: ignore[arg-type]


def read_all(it: Intake, log: list[Record]) -> None:
    for record in log:
        it.add(record)


def read_again_after_an_abort(it: Intake, log: list[Record]) -> None:
    """The transaction aborted: the intake forgets what it folded, and the
    partition is read again from its committed offset (none: the start)."""
    it.reset()
    it.assigned(TP, None)
    read_all(it, log)


def offsets_of(
    point: dict[tuple[str, int], tuple[int, str]] | None,
) -> dict[tuple[str, int], int] | None:
    """The offsets of a commit point, without their metadata (which also names
    the open round's updates folded below them)."""
    return None if point is None else {tp: offset for tp, (offset, _text) in point.items()}
