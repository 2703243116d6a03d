"""Cross-language conformance: a Java reader and writer of the golden vectors.

Runs ``mvn test`` in tests/crosslang/java (see its README.md): a decoder and
encoder written in Java from docs/wire-format.md, with protobuf-java generated
from proto/ by the Maven build (protoc from Maven Central), zstd-jni, lz4-java's
XXH32, commons-codec's BLAKE3 and the JDK's CRC-32C and Ed25519, must decode
every vector in tests/vectors to its ``.json`` expectations, re-encode every
valid one byte for byte, refuse every refusal vector for its check, and read
the message vectors (envelopes, the signed one, the transfer parts); it reads
the streamed transfers (section 14.5) to the tensors their ``.json`` lists,
verifies the signed one and refuses each stream refusal for the check the
manifest names, which it prints, one line each, for the test here to compare.

Java 17+ and Maven are required: without them these tests fail, they do not
skip. The first run downloads the pinned artifacts from Maven Central into
~/.m2; later runs use that cache.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from crosslang_tools import expected_stream_lines, report, run, stream_lines, tool

ROOT = Path(__file__).resolve().parents[2]
JAVA_DIR = ROOT / "tests" / "crosslang" / "java"
VECTORS = ROOT / "tests" / "vectors"
TIMEOUT_S = 900


def _mvn() -> str:
    where = "for the cross-language conformance tests (tests/crosslang/java)"
    tool("java", f"install a JDK 17+ (e.g. apt-get install openjdk-17-jdk-headless) {where}")
    return tool("mvn", f"install Maven 3.8 or newer (e.g. apt-get install maven) {where}")


def run_maven(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs mvn in tests/crosslang/java; fails the test on a timeout."""
    return run([_mvn(), "-B", "-q", *args], JAVA_DIR, TIMEOUT_S)


def test_java_reader_conforms_to_golden_vectors() -> None:
    proc = run_maven("test")
    assert proc.returncode == 0, f"mvn test failed in {JAVA_DIR}\n{report(proc)}"
    reports = sorted((JAVA_DIR / "target" / "surefire-reports").glob("TEST-*.xml"))
    suites = {p.stem.removeprefix("TEST-io.flwire.crosslang."): p.read_text() for p in reports}
    want = {"TensorVectorsTest", "RefusalVectorsTest", "MessageVectorsTest", "StreamVectorsTest"}
    assert want <= suites.keys(), f"surefire ran {sorted(suites)}\n{report(proc)}"
    for name, xml in suites.items():
        head = re.search(
            r'<testsuite [^>]*tests="(\d+)" errors="(\d+)" skipped="(\d+)" '
            r'failures="(\d+)"',
            xml,
        )
        assert head is not None, f"{name}: no testsuite line"
        tests, errors, skipped, failures = map(int, head.groups())
        assert tests > 0 and errors == skipped == failures == 0, f"{name}: {head.group(0)}"


def test_java_reader_reads_the_streams_and_refuses_the_stream_refusals() -> None:
    """Section 14.5: the Java reader decodes each streamed transfer to its
    tensors (and verifies the signed one), and names, for each stream refusal,
    the check the manifest names (StreamVectorsTest prints one line each)."""
    proc = run_maven("test", "-Dtest=StreamVectorsTest", "-Dsurefire.failIfNoSpecifiedTests=false")
    assert proc.returncode == 0, f"mvn test failed in {JAVA_DIR}\n{report(proc)}"
    expected = expected_stream_lines(VECTORS)
    assert sum(line.startswith("STREAM-REFUSAL ") for line in expected) >= 20
    assert stream_lines(proc.stdout) == expected, report(proc)
