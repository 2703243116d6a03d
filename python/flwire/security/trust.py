"""Trust stores: which public key signs for which id.

A server trusts its clients' keys, a client the server's: a directory of
``<id>.pub`` files (PEM, as ``flwire keys generate`` writes them) or a CSV
file of ``id,public_key`` lines (the key's 32 raw bytes in base64; blank lines
and lines starting with ``#`` are skipped, and a first line ``id,public_key``
is a header).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from flwire.exceptions import ConfigurationException
from flwire.security.keys import (
    PRIVATE_SUFFIX,
    PUBLIC_SUFFIX,
    check_key_id,
    load_public_key,
    public_key_from_base64,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_CSV_HEADER = "id,public_key"


class TrustStore(Mapping[str, "Ed25519PublicKey"]):
    """Public keys by key id (read-only once built)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key_id, key in (keys or {}).items():
            self._keys[check_key_id(key_id)] = key

    def __getitem__(self, key_id: str) -> Ed25519PublicKey:
        return self._keys[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustStore({sorted(self._keys)!r})"

    @classmethod
    def from_directory(cls, path: Path) -> TrustStore:
        """Every ``<id>.pub`` file of ``path`` (other files are ignored)."""
        path = Path(path)
        if not path.is_dir():
            raise ConfigurationException(f"{path} is not a directory")
        keys = {}
        for file in sorted(path.glob(f"*{PUBLIC_SUFFIX}")):
            key_id = file.name[: -len(PUBLIC_SUFFIX)]
            check_key_id(key_id, file_name=True)
            keys[key_id] = load_public_key(file)
        return cls(keys)

    @classmethod
    def from_csv(cls, path: Path) -> TrustStore:
        """The ``id,public_key`` lines of the CSV file ``path``."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise ConfigurationException(f"cannot read {path}: {why}") from None
        keys: dict[str, Ed25519PublicKey] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#") or (number == 1 and line == _CSV_HEADER):
                continue
            where = f"{path}, line {number}"
            key_id, sep, encoded = line.partition(",")
            key_id = key_id.strip()
            if not sep or "," in encoded:
                raise ConfigurationException(f"{where}: expected 'id,public_key'")
            try:
                check_key_id(key_id)
                key = public_key_from_base64(encoded)
            except ConfigurationException as exc:
                raise ConfigurationException(f"{where}: {exc}") from None
            if key_id in keys:
                raise ConfigurationException(f"{where}: key id {key_id!r} is listed twice")
            keys[key_id] = key
        return cls(keys)


def load_trust_store(path: Path) -> TrustStore:
    """A trust store from a directory of ``<id>.pub`` files or a CSV file.
    ConfigurationException when it holds no key: a receiver with an empty trust
    store refuses every signed message (``unknown_key``), which is a set-up
    mistake (a wrong folder, or private keys where the public ones belong)."""
    path = Path(path)
    if path.is_dir():
        store = TrustStore.from_directory(path)
        where = f"trust store {path} holds no <id>{PUBLIC_SUFFIX} file"
        if not store and any(path.glob(f"*{PRIVATE_SUFFIX}")):
            where += f" (only {PRIVATE_SUFFIX} files: trust stores take public keys)"
    elif not path.exists():
        raise ConfigurationException(f"trust store {path} does not exist")
    else:
        store = TrustStore.from_csv(path)
        where = f"trust store {path} lists no {_CSV_HEADER} line"
    if not store:
        raise ConfigurationException(
            f"{where}: copy the senders' public keys there (flwire keys generate writes "
            f"<id>{PUBLIC_SUFFIX} beside <id>{PRIVATE_SUFFIX})"
        )
    return store
