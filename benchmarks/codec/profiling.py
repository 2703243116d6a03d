"""--profile: where flwire's time goes on one model, stage by stage and under cProfile."""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import crc32c
import numpy as np
import torch
import zstandard

from benchmarks.models import StateDict, raw_size
from benchmarks.tables import MB, fmt_time
from flwire import EncodeOptions, decode_tensor_map, encode_tensor_map
from flwire.tensors.codecs import LZ4, ZSTD, frame_bounds
from flwire.tensors.shuffle import shuffled_slice, unshuffle_slice_into


def profile_flwire(sd: StateDict, name: str) -> str:
    """Where flwire's time goes on one model: the codec's stages timed one by one (serial),
    whole calls with the default threads and threads=1, and cProfile of serial calls
    (cProfile sees only the calling thread, hence threads=1)."""
    raw = raw_size(sd)
    lines = [f"== profile: flwire on {name} ({raw / MB:.0f} MB raw, {len(sd)} tensors) =="]
    srcs = [t.detach().contiguous().reshape(-1).view(torch.uint8).numpy() for t in sd.values()]
    itemsize = next(iter(sd.values())).element_size()

    def stage(label: str, fn: Callable[[], Any]) -> Any:
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        lines.append(f"  {label:<48} {fmt_time(dt):>9}  {raw / MB / dt:7.0f} MB/s")
        return out

    def copy_into(buf: Any) -> Any:
        view, pos = memoryview(buf).cast("B"), 0
        for s in srcs:
            view[pos : pos + s.nbytes] = s.data
            pos += s.nbytes
        return buf

    def decompress_all(frames: list[bytes], outs: list[np.ndarray]) -> None:
        for f, o in zip(frames, outs, strict=True):
            ZSTD.decompress_into(memoryview(f), o, "t")

    def lz4_compress_all() -> list[list[bytes]]:
        return [[LZ4.compress(s[a:b], 0) for a, b in frame_bounds(s.nbytes)] for s in srcs]

    def lz4_decompress_all(frames: list[list[bytes]], outs: list[np.ndarray]) -> None:
        for fs, o in zip(frames, outs, strict=True):
            for f, (a, b) in zip(fs, frame_bounds(o.nbytes), strict=True):
                LZ4.decompress_into(memoryview(f), o[a:b], "t")

    def unshuffle_all(shuffled: list[np.ndarray], outs: list[np.ndarray]) -> None:
        for s, o in zip(shuffled, outs, strict=True):
            unshuffle_slice_into(s, o, itemsize, 0)

    lines.append("stages, serial on one thread, all tensors (MB/s of raw bytes):")
    stage("crc32c of raw bytes", lambda: [crc32c.crc32c(s.data) for s in srcs])
    frames = stage("zstd level 1 compress", lambda: [ZSTD.compress(s, 1) for s in srcs])
    shuffled = stage(
        "byte shuffle (numpy strided copy)",
        lambda: [shuffled_slice(s, itemsize, 0, s.nbytes) for s in srcs],
    )
    stage(
        "zstd level 1 compress of shuffled bytes", lambda: [ZSTD.compress(s, 1) for s in shuffled]
    )
    stage("b''.join of all compressed frames (1 copy)", lambda: b"".join(frames))
    stage("b''.join of the raw tensors (1 copy, 'none')", lambda: b"".join(s.data for s in srcs))
    stage("copy into fresh bytearray (4 KiB page faults)", lambda: copy_into(bytearray(raw)))
    stage("copy into fresh np.empty (THP-advised)", lambda: copy_into(np.empty(raw, np.uint8)))
    outs = stage(
        "np.empty per tensor (lazy, no faults yet)",
        lambda: [np.empty(s.nbytes, np.uint8) for s in srcs],
    )
    stage("zstd_decompress_into, fresh outputs (stream)", lambda: decompress_all(frames, outs))
    stage("zstd_decompress_into, same outputs again", lambda: decompress_all(frames, outs))
    dctx = zstandard.ZstdDecompressor()
    stage(
        "ZstdDecompressor.decompress (one-shot, bytes)",
        lambda: [dctx.decompress(f) for f in frames],
    )
    stage("unshuffle_slice_into (strided numpy copy)", lambda: unshuffle_all(shuffled, outs))
    lz4_frames = stage("lz4 compress, 512 KiB frames", lz4_compress_all)
    stage("lz4 decompress_into, 512 KiB frames", lambda: lz4_decompress_all(lz4_frames, outs))
    frames = shuffled = outs = []
    lz4_frames = []
    gc.collect()

    lines.append("whole calls, default threads vs threads=1:")
    for label, opts in (
        ("zstd", EncodeOptions()),
        ("zstd+shuffle", EncodeOptions(shuffle=True)),
        ("lz4", EncodeOptions(compression="lz4")),
        ("none", EncodeOptions(compression="none")),
    ):
        blob = stage(f"encode {label}", partial(encode_tensor_map, sd, opts))
        stage(f"encode {label}, threads=1", partial(encode_tensor_map, sd, opts, threads=1))
        stage(f"decode {label}", partial(decode_tensor_map, blob))
        stage(f"decode {label}, threads=1", partial(decode_tensor_map, blob, threads=1))
        stage(
            f"decode {label}, verify_checksum=False",
            partial(decode_tensor_map, blob, verify_checksum=False),
        )
        blob = b""
        gc.collect()

    def prof(label: str, fn: Callable[[], Any]) -> None:
        gc.collect()
        p = cProfile.Profile()
        p.enable()
        fn()
        p.disable()
        s = io.StringIO()
        pstats.Stats(p, stream=s).sort_stats("tottime").print_stats(7)
        body = [ln for ln in s.getvalue().splitlines() if ln.strip()]
        head = next(i for i, ln in enumerate(body) if "function calls" in ln)
        start = next(i for i, ln in enumerate(body) if "ncalls" in ln)
        lines.append(f"cProfile, {label}, threads=1 ({body[head].strip()}), top by own time:")
        lines.extend("  " + ln.strip()[:140] for ln in body[start : start + 8])

    prof("encode zstd", lambda: encode_tensor_map(sd, threads=1))
    blob = encode_tensor_map(sd)
    prof("decode zstd", partial(decode_tensor_map, blob, threads=1))
    prof("encode zstd+shuffle", lambda: encode_tensor_map(sd, shuffle=True, threads=1))
    blob = encode_tensor_map(sd, shuffle=True)
    prof("decode zstd+shuffle", partial(decode_tensor_map, blob, threads=1))
    blob = encode_tensor_map(sd, compression="lz4")
    prof("decode lz4", partial(decode_tensor_map, blob, threads=1))
    return "\n".join(lines)
