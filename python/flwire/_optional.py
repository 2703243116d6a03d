"""Optional dependencies, imported on first use behind their extras.

``import flwire`` needs only protobuf, numpy, zstandard, lz4 and crc32c. PyTorch,
confluent-kafka, scikit-learn, matplotlib, PyYAML, psutil, cryptography and blake3
are imported by the modules that use them, through :func:`require`, which names
the extra to install when one is missing.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from flwire.exceptions import MissingDependencyError

#: The extra that installs each optional module, and what flwire uses it for.
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "torch tensors and the models"),
    "confluent_kafka": ("kafka", "the Kafka transport"),
    "sklearn": ("demo", "the demo's data set"),
    "matplotlib": ("demo", "the demo's plot"),
    "yaml": ("compat", "YAML configuration files"),
    "psutil": ("compat", "system metrics"),
    "cryptography": ("sign", "signing and verifying messages"),
    "blake3": ("sign", "the digest that message signatures cover"),
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module``, or raise MissingDependencyError naming the extra to
    install (``extra`` overrides the one :data:`EXTRAS` gives)."""
    loaded = sys.modules.get(module)
    if loaded is not None:  # the common case, on hot paths: no import machinery
        return loaded
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        default_extra, purpose = EXTRAS.get(package, ("all", module))
        raise MissingDependencyError(
            f"the package {package!r} ({purpose}) is not installed: "
            f"pip install 'flwire[{extra or default_extra}]' ({exc})"
        ) from None
