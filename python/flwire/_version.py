"""The package version, read from the installed distribution's metadata (the
one source: ``version`` in pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flwire")
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    __version__ = "0+unknown"
