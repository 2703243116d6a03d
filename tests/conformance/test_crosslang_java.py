"""Cross-language conformance: a Java reader and writer of the golden vectors.

Runs ``mvn test`` in tests/crosslang/java (see its README.md): a decoder and
encoder written in Java from docs/wire-format.md, with protobuf-java generated
from proto/ by the Maven build (protoc from Maven Central), zstd-jni, lz4-java's
XXH32, commons-codec's BLAKE3 and the JDK's CRC-32C and Ed25519, must decode
every vector in tests/vectors to its ``.json`` expectations, re-encode every
valid one byte for byte, refuse every refusal vector for its check, and read
the message vectors (envelopes, the signed one, the transfer parts).

Java 17+ and Maven are required: without them these tests fail, they do not
skip. The first run downloads the pinned artifacts from Maven Central into
~/.m2; later runs use that cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JAVA_DIR = ROOT / "tests" / "crosslang" / "java"
TIMEOUT_S = 900


def _mvn() -> str:
    if shutil.which("java") is None:
        pytest.fail(
            "Java 17 or newer is needed for the cross-language conformance tests "
            "(tests/crosslang/java): install a JDK (e.g. apt-get install openjdk-17-jdk-headless) "
            "and put `java` on PATH",
            pytrace=False,
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        pytest.fail(
            "Maven is needed for the cross-language conformance tests (tests/crosslang/java): "
            "install Maven 3.8 or newer (e.g. apt-get install maven) and put `mvn` on PATH",
            pytrace=False,
        )
    return mvn


def _text(stream: str | bytes | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")


def run_maven(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs mvn in tests/crosslang/java; fails the test on a timeout."""
    cmd = [_mvn(), "-B", "-q", *args]
    try:
        return subprocess.run(
            cmd,
            cwd=JAVA_DIR,
            env={**os.environ},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(cmd)} timed out after {TIMEOUT_S} s\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        )


def _report(proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{' '.join(map(str, proc.args))}: exit status {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-20000:]}"
    )


def test_java_reader_conforms_to_golden_vectors() -> None:
    proc = run_maven("test")
    assert proc.returncode == 0, f"mvn test failed in {JAVA_DIR}\n{_report(proc)}"
    reports = sorted((JAVA_DIR / "target" / "surefire-reports").glob("TEST-*.xml"))
    suites = {p.stem.removeprefix("TEST-io.flwire.crosslang."): p.read_text() for p in reports}
    assert {"TensorVectorsTest", "RefusalVectorsTest", "MessageVectorsTest"} <= suites.keys(), (
        f"surefire ran {sorted(suites)}\n{_report(proc)}"
    )
    for name, xml in suites.items():
        head = re.search(
            r'<testsuite [^>]*tests="(\d+)" errors="(\d+)" skipped="(\d+)" '
            r'failures="(\d+)"',
            xml,
        )
        assert head is not None, f"{name}: no testsuite line"
        tests, errors, skipped, failures = map(int, head.groups())
        assert tests > 0 and errors == skipped == failures == 0, f"{name}: {head.group(0)}"
