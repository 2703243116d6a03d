"""The package's shape: what ``import flwire`` loads, what the facades export,
and the house rules (the core never imports compat; no module imports another
module's underscore names)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "flwire"
OPTIONAL = [
    "torch",
    "confluent_kafka",
    "sklearn",
    "matplotlib",
    "ml_dtypes",
    "yaml",
    "psutil",
    "cryptography",
    "blake3",
]
#: Private modules made to be shared inside the package (DESIGN.md: "what is
#: shared lives in a private package meant for it").
SHARED_PRIVATE = {
    "flwire._protowire",
    "flwire._optional",
    "flwire._version",
    "flwire._aio",
    "flwire._args",
}


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: list[str] = json.loads(proc.stdout)
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import flwire",
        "import flwire.tensors, flwire.messages, flwire.transport, flwire.numpy",
        "import flwire.compat.serialization.message_serializer",
        "from flwire.transport import Channel, InMemoryTransport, TopicLayout",
        "import flwire.security",
    ],
)
def test_importing_the_core_loads_no_optional_package(statement):
    assert _loaded_after(statement) == []


def test_optional_packages_load_on_first_use():
    assert _loaded_after("from flwire.transport import KafkaTransport") == ["confluent_kafka"]
    assert "torch" in _loaded_after("import flwire.compat.models")
    signing = "from flwire import security; security.private_key_from_seed(bytes(32))"
    assert _loaded_after(signing) == ["cryptography"]


@pytest.mark.parametrize(
    "module",
    [
        "flwire",
        "flwire.tensors",
        "flwire.messages",
        "flwire.security",
        "flwire.transport",
        "flwire.numpy",
        "flwire.torch",
        "flwire._protowire",
        "flwire.tensors.codecs",
        "flwire.tensors.lossy",
    ],
)
def test_facades_export_what_they_list(module):
    mod = importlib.import_module(module)
    names = mod.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_version_is_the_distribution_version():
    import importlib.metadata

    import flwire

    assert flwire.__version__ == importlib.metadata.version("flwire")


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported from, names imported, line) of every import in a file."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".")[: -node.level]
                base = ".".join([*parts, node.module])
            found.append((base, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


def _sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "v1" not in p.relative_to(PACKAGE).parts]


def test_the_core_never_imports_compat():
    offenders = []
    for path in _sources():
        part = path.relative_to(PACKAGE).parts[0]
        if part in ("compat", "demo"):
            continue
        offenders += [
            f"{path.relative_to(PACKAGE)}:{line} imports {base}"
            for base, _, line in _imports(path)
            if base == "flwire.compat" or base.startswith("flwire.compat.")
        ]
    assert offenders == []


def test_no_module_imports_another_modules_underscore_names():
    offenders = []
    for path in _sources():
        for base, names, line in _imports(path):
            if not base.startswith("flwire"):
                continue
            for name in names:
                full = f"{base}.{name}"
                private_module = any(p.startswith("_") for p in base.split(".")[1:])
                if private_module and not any(base.startswith(s) for s in SHARED_PRIVATE):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{line} {base}")
                elif (
                    name.startswith("_")
                    and not name.startswith("__")
                    and full not in SHARED_PRIVATE
                ):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{line} {full}")
    assert offenders == []
