"""Hand-built parts of streamed transfers for the tests (importable as
``stream_forge``: tests/ is on the path): a head, chunks and a seal made with
flwire.transport.streaming.format around TensorMaps built with the generated classes
(helpers.pb_tensor), not with the writer under test, and an assembler fed
them part by part."""

from __future__ import annotations

import re
from typing import Any

import crc32c
import numpy as np
from helpers import pb_tensor
from stream_tools import run, streamed

from flwire.tensors import dtypes
from flwire.transport.streaming import Failed, Finished, StreamAssembler
from flwire.transport.streaming.format import chunk_part, head_part, seal_part
from flwire.transport.streaming.writer import head_envelope, tensor_infos
from flwire.v1 import messages_pb2, tensor_pb2, transfer_pb2

F32 = dtypes.FLOAT32
W = np.arange(20, dtype=np.float32)  # the one tensor "w" of the forged streams


class Forge:
    """Hand-built parts of one stream: a client update with tensor "w" (20
    float32 elements) and tensor "b" (3 bool elements)."""

    def __init__(self, sender: str = "client-1") -> None:
        self.msg = streamed({"w": W, "b": np.array([True, False, True])}, sender=sender)
        self.id = self.msg.message_id
        self.envelope = head_envelope(self.msg)
        assert self.msg.sources is not None
        self.infos = tensor_infos(self.msg.sources)

    def head(
        self,
        *,
        envelope: messages_pb2.Envelope | None = None,
        infos: list[transfer_pb2.TensorInfo] | None = None,
        signed: bool = False,
    ) -> bytes:
        return head_part(
            self.id,
            envelope if envelope is not None else self.envelope,
            self.infos if infos is None else infos,
            signed=signed,
        )

    def chunk(
        self, index: int, tensor_index: int, offset: int, *tensors: tensor_pb2.Tensor
    ) -> bytes:
        elements = tensor_pb2.TensorMap(tensors=list(tensors)).SerializeToString()
        return chunk_part(self.id, index, tensor_index, offset, [elements])

    def seal(
        self,
        index: int,
        earlier: list[bytes],
        *,
        part_count: int | None = None,
        crc: int | None = None,
    ) -> bytes:
        if part_count is None and crc is None:
            return seal_part(self.id, index, crc32c.crc32c(b"".join(earlier)))
        seal = transfer_pb2.StreamSeal(
            part_count=index + 1 if part_count is None else part_count,
            stream_crc32c=crc32c.crc32c(b"".join(earlier)) if crc is None else crc,
        )
        part = transfer_pb2.StreamPart(transfer_id=self.id, part_index=index, seal=seal)
        return part.SerializeToString()

    def valid(self) -> list[bytes]:
        """A whole valid stream: head, "w" in two chunks, "b" in one, seal."""
        values = [
            self.head(),
            self.chunk(1, 0, 0, elements(W[:12])),
            self.chunk(2, 0, 12, elements(W[12:])),
            self.chunk(3, 1, 0, elements(np.array([1, 0, 1], dtype=np.uint8), dtype="bool")),
        ]
        return [*values, self.seal(4, values)]


def elements(
    array: np.ndarray, *, dtype: str | None = None, name: str = "", **kw: Any
) -> tensor_pb2.Tensor:
    """An encoded 1-D tensor holding ``array``'s bytes (as ``dtype``)."""
    info = dtypes.BY_NAME[dtype or array.dtype.name]
    count = array.nbytes // info.itemsize
    return pb_tensor(name, info, (count,), array.tobytes(), **kw)


async def feed(asm: StreamAssembler, values: list[bytes]) -> tuple[list[Finished], list[Failed]]:
    """Add ``values`` in order (token = position); what finished and failed."""
    finished: list[Finished] = []
    failed: list[Failed] = []
    for token, value in enumerate(values):
        done, dropped = await asm.add(value, token)
        if done is not None:
            finished.append(done)
        failed.extend(dropped)
    return finished, failed


def outcome(values: list[bytes], **assembler_args: Any) -> tuple[list[Finished], list[Failed]]:
    asm = StreamAssembler(threads=1, **assembler_args)
    result = run(feed(asm, values))
    assert asm.pending_streams == 0 and asm.pending_bytes == 0
    return result


def given_up(values: list[bytes], reason: str, **assembler_args: Any) -> Failed:
    """Feed ``values``: nothing finishes, one failure is not a skipped copy, and
    its reason matches ``reason``; that failure."""
    finished, failed = outcome(values, **assembler_args)
    assert finished == []
    real = [f for f in failed if not f.duplicate]
    assert len(real) == 1, failed
    assert re.search(reason, real[0].reason), real[0].reason
    return real[0]
