"""Regenerate (or check) the Python code made from the schemas in proto/.

    python codegen/generate.py          # write python/flwire/v1/*_pb2.py(i) and *.proto
    python codegen/generate.py --check  # exit 1 if the committed files are stale

The toolchain is grpcio-tools, pinned in pyproject.toml (extra `codegen`).
The proto package path equals the Python import path (flwire.v1), so the
generated imports work as they are: nothing is rewritten after protoc. The
.proto files are copied beside the generated code, so that the wheel ships
the schemas its classes were made from.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "python"
PACKAGE_DIR = OUT_ROOT / "flwire" / "v1"

HEADER = (
    "# Generated from proto/flwire/v1 by codegen/generate.py. DO NOT EDIT!\n"
    "# Change the .proto files and run `make gen`.\n"
)
INIT_TEXT = HEADER + '"""Generated Protobuf classes for package flwire.v1."""\n'


def _protos() -> list[Path]:
    return sorted(PROTO_ROOT.glob("flwire/v1/*.proto"))


def _generate(out_root: Path) -> Path:
    """Run protoc into out_root; return the generated package folder."""
    from grpc_tools import protoc

    wkt_include = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt_include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        *[str(p) for p in _protos()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    pkg = out_root / "flwire" / "v1"
    for path in pkg.iterdir():
        text = path.read_text()
        if path.suffix == ".pyi":
            path.write_text(HEADER + text)
    (pkg / "__init__.py").write_text(INIT_TEXT)
    for proto in _protos():
        shutil.copyfile(proto, pkg / proto.name)
    return pkg


def _generated_files(pkg: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(pkg.iterdir()) if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = _generated_files(_generate(Path(tmp)))
        if not opts.check:
            if PACKAGE_DIR.exists():
                shutil.rmtree(PACKAGE_DIR)
            PACKAGE_DIR.mkdir(parents=True)
            for name, text in fresh.items():
                (PACKAGE_DIR / name).write_text(text)
            print(f"generated {len(fresh)} files in {PACKAGE_DIR.relative_to(ROOT)}")
            return 0
    committed = _generated_files(PACKAGE_DIR) if PACKAGE_DIR.exists() else {}
    committed.pop("__pycache__", None)
    stale = sorted(set(fresh) ^ set(committed)) + sorted(
        n for n in set(fresh) & set(committed) if fresh[n] != committed[n]
    )
    if not stale:
        print("generated code is up to date with proto/")
        return 0
    print(
        "generated code in python/flwire/v1 is stale; run `make gen` and commit:", file=sys.stderr
    )
    for name in stale:
        print(f"  {name}", file=sys.stderr)
        if name in fresh and name in committed:
            diff = difflib.unified_diff(
                committed[name].splitlines(),
                fresh[name].splitlines(),
                "committed",
                "fresh",
                lineterm="",
                n=1,
            )
            for line in list(diff)[:20]:
                print(f"    {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
