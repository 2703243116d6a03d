"""Cross-language conformance: a Go reader of the golden vectors.

Runs ``go test`` in tests/crosslang/go (see its README.md): a decoder written in
Go from docs/wire-format.md, with stock protobuf-go generated code,
klauspost/compress zstd and pierrec/lz4 (and lukechampine.com/blake3 for the
signed envelope and the signed stream), must decode every vector in
tests/vectors to its ``.json`` expectations and refuse the corruptions of the
spec's section 10; it reads the streamed transfers (section 14.5) to the
tensors their ``.json`` lists and refuses each stream refusal for the check the
manifest names, which it prints, one line each, for the test here to compare.

Go is required (the version in tests/crosslang/go/go.mod or newer; with the
default GOTOOLCHAIN=auto an older go downloads that toolchain itself): without
it these tests fail, they do not skip. The first run downloads the pinned
modules from the Go module proxy (GOPROXY); later runs use Go's module and build
caches.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from crosslang_tools import expected_stream_lines, report, run, stream_lines, tool

ROOT = Path(__file__).resolve().parents[2]
GO_DIR = ROOT / "tests" / "crosslang" / "go"
VECTORS = ROOT / "tests" / "vectors"
TIMEOUT_S = 600


def _go() -> str:
    return tool(
        "go",
        "install Go (https://go.dev/dl/) for the cross-language conformance tests "
        "(tests/crosslang/go) and put `go` on PATH",
    )


def _run(args: list[str], cwd: Path = GO_DIR, **env: str) -> subprocess.CompletedProcess[str]:
    return run(args, cwd, TIMEOUT_S, **env)


def test_go_reader_conforms_to_golden_vectors() -> None:
    # go.mod and go.sum are pinned and complete: modules missing from the cache are
    # downloaded from GOPROXY, but -mod=readonly stops go from rewriting go.mod / go.sum.
    proc = _run([_go(), "test", "-mod=readonly", "-count=1", "./..."])
    assert proc.returncode == 0, f"go test failed in {GO_DIR}\n{report(proc)}"


def test_go_sources_are_gofmt_clean() -> None:
    go = _go()
    gofmt = shutil.which("gofmt")
    if gofmt is None:  # not always on PATH; it ships in GOROOT/bin with go
        goroot = _run([go, "env", "GOROOT"]).stdout.strip()
        gofmt = str(Path(goroot) / "bin" / "gofmt")
    proc = _run([gofmt, "-l", "."])
    assert proc.returncode == 0, report(proc)
    assert proc.stdout.strip() == "", f"files that gofmt would change:\n{proc.stdout}"


def test_go_generated_code_is_current() -> None:
    """flwirev1/*.pb.go match proto/flwire/v1 (regenerate: bash tests/crosslang/go/generate.sh)."""
    _go()
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed to run tests/crosslang/go/generate.sh"
    proc = _run([bash, str(GO_DIR / "generate.sh"), "--check"], cwd=ROOT, PYTHON=sys.executable)
    assert proc.returncode == 0, report(proc)


def test_go_reader_reads_the_streams_and_refuses_the_stream_refusals() -> None:
    """Section 14.5: the Go reader decodes each streamed transfer to its tensors
    (and verifies the signed one), and names, for each stream refusal, the
    check the manifest names."""
    proc = _run(
        [
            _go(),
            "test",
            "-mod=readonly",
            "-count=1",
            "-v",
            "-run",
            "^TestStream(Vectors|Refusals)$",
            ".",
        ]
    )
    assert proc.returncode == 0, f"go test failed in {GO_DIR}\n{report(proc)}"
    got = stream_lines(proc.stdout)
    expected = expected_stream_lines(VECTORS)
    assert sum(line.startswith("STREAM-REFUSAL ") for line in expected) >= 20
    assert got == expected, report(proc)
