"""``buf breaking`` holds the schemas to the published v1 (proto/flwire/v1/baseline.binpb).

The check runs in ``make lint``; these tests prove it bites: each breaking edit,
made to a copy of the protos, fails it with the rule that names the change,
while the schemas as they are pass it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "proto" / "flwire" / "v1" / "baseline.binpb"
BUF = Path(sys.executable).with_name("buf")
TENSOR = Path("proto/flwire/v1/tensor.proto")


def _breaking(tree: Path) -> tuple[int, list[dict[str, str]]]:
    """Run buf breaking on the module in ``tree`` against the baseline image."""
    proc = subprocess.run(
        [str(BUF), "breaking", "--against", str(BASELINE), "--error-format", "json"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, findings


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("*.binpb"))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def _edit(tree: Path, pattern: str, replacement: str) -> None:
    path = tree / TENSOR
    text = path.read_text()
    edited, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert count == 1, f"the edit {pattern!r} found nothing to change in {TENSOR}"
    path.write_text(edited)


def test_the_schemas_as_they_are_pass(tree: Path) -> None:
    assert BASELINE.is_file() and BUF.is_file()
    code, findings = _breaking(tree)
    assert (code, findings) == (0, [])


@pytest.mark.parametrize(
    ("pattern", "replacement", "rule"),
    [
        # A renumbered field: number 6 disappears (its bytes would be misread).
        (r"^  uint64 raw_size = 6;$", "  uint64 raw_size = 16;", "FIELD_NO_DELETE"),
        # A removed field, without reserving its number.
        (r"^  // [^\n]*\n(  // [^\n]*\n)*  fixed32 crc32c = 7;\n", "", "FIELD_NO_DELETE"),
        # A changed type: uint64 -> int32 changes how the varint is read.
        (r"^  uint64 raw_size = 6;$", "  int32 raw_size = 6;", "FIELD_SAME_TYPE"),
    ],
    ids=["renumbered", "removed", "retyped"],
)
def test_a_breaking_edit_fails_the_check(tree: Path, pattern: str, replacement: str, rule: str):
    _edit(tree, pattern, replacement)
    code, findings = _breaking(tree)
    assert code != 0
    assert rule in {f["type"] for f in findings}, findings
