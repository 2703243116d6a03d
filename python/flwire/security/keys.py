"""Ed25519 key pairs: generate, write and read them (PEM), and check key ids.

Needs the ``cryptography`` package: ``pip install 'flwire[sign]'``.

    private = generate_private_key()
    write_key_pair("client-1", private, Path("keys"))  # keys/client-1.key (0600), .pub
    public = load_public_key(Path("keys/client-1.pub"))
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwire._optional import require
from flwire.exceptions import ConfigurationException

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

#: Longest key id, in UTF-8 bytes (the envelope's ids have the same bound).
MAX_KEY_ID_BYTES = 128
#: Suffixes of the files :func:`write_key_pair` writes.
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
#: Key ids that name files: letters, digits, '.', '_', '-', '@', not starting with '.'.
_FILE_SAFE = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]*")


def _ed25519() -> Any:
    return require("cryptography.hazmat.primitives.asymmetric.ed25519", "sign")


def _serialization() -> Any:
    return require("cryptography.hazmat.primitives.serialization", "sign")


def check_key_id(key_id: str, *, file_name: bool = False) -> str:
    """Return ``key_id`` if it is a valid key id (1 to 128 UTF-8 bytes, no
    control characters or commas; with ``file_name``, also usable as a file
    name), else raise ConfigurationException saying why."""
    size = len(key_id.encode("utf-8", "surrogatepass"))
    if not key_id or size > MAX_KEY_ID_BYTES:
        raise ConfigurationException(
            f"key id {key_id!r} must be 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes (it is {size})"
        )
    if any(c == "," or ord(c) < 0x20 or ord(c) == 0x7F for c in key_id):
        raise ConfigurationException(f"key id {key_id!r} holds a comma or a control character")
    if file_name and not _FILE_SAFE.fullmatch(key_id):
        raise ConfigurationException(
            f"key id {key_id!r} cannot name a key file: use letters, digits, "
            "'.', '_', '-' and '@', not starting with '.'"
        )
    return key_id


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    key: Ed25519PrivateKey = _ed25519().Ed25519PrivateKey.generate()
    return key


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """The Ed25519 private key of a 32-byte seed (RFC 8032)."""
    if len(seed) != 32:
        raise ConfigurationException(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
    key: Ed25519PrivateKey = _ed25519().Ed25519PrivateKey.from_private_bytes(seed)
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    ser = _serialization()
    data: bytes = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    return data


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """``key`` as SubjectPublicKeyInfo PEM."""
    ser = _serialization()
    data: bytes = key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return data


def public_key_base64(key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of ``key`` in standard base64 (a trust store CSV's column)."""
    ser = _serialization()
    raw: bytes = key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_base64(text: str) -> Ed25519PublicKey:
    """The Ed25519 public key whose 32 raw bytes ``text`` holds in base64."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationException("a public key is not valid base64") from None
    if len(raw) != 32:
        raise ConfigurationException(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    key: Ed25519PublicKey = _ed25519().Ed25519PublicKey.from_public_bytes(raw)
    return key


def load_private_key(source: Path | bytes) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key (a file, or its bytes).
    A file that others may read (group or world permission bits, as ssh checks)
    is loaded with a warning: ``chmod 600`` it."""
    data, where = _read(source)
    if not isinstance(source, bytes):
        _warn_if_readable(Path(source))
    try:
        key = _serialization().load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationException(
            f"{where}: not an unencrypted PEM private key ({exc})"
        ) from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise ConfigurationException(f"{where}: not an Ed25519 private key")
    result: Ed25519PrivateKey = key
    return result


def load_public_key(source: Path | bytes) -> Ed25519PublicKey:
    """Read a PEM (SubjectPublicKeyInfo) Ed25519 public key (a file, or its bytes)."""
    data, where = _read(source)
    try:
        key = _serialization().load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigurationException(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, _ed25519().Ed25519PublicKey):
        raise ConfigurationException(f"{where}: not an Ed25519 public key")
    result: Ed25519PublicKey = key
    return result


def _warn_if_readable(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if os.name == "posix" and mode & 0o077:
        logger.warning(
            "private key %s may be read by others (mode %04o): chmod 600 %s",
            path,
            mode & 0o777,
            path,
        )


def _read(source: Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "key"
    try:
        return Path(source).read_bytes(), str(source)
    except OSError as exc:
        raise ConfigurationException(f"cannot read {source}: {exc.strerror}") from None


def write_key_pair(key_id: str, key: Ed25519PrivateKey, out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/<key_id>.key`` (PKCS#8 PEM, mode 0600) and
    ``out_dir/<key_id>.pub`` (PEM); refuse to overwrite either. Return both paths."""
    check_key_id(key_id, file_name=True)
    out_dir = Path(out_dir)
    private_path = out_dir / f"{key_id}{PRIVATE_SUFFIX}"
    public_path = out_dir / f"{key_id}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise ConfigurationException(f"{path} exists: not overwriting it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(private_path, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, private_key_pem(key))
        finally:
            os.close(fd)
        fd = os.open(public_path, flags, 0o644)
        try:
            os.write(fd, public_key_pem(key.public_key()))
        finally:
            os.close(fd)
    except FileExistsError as exc:
        raise ConfigurationException(f"{exc.filename} exists: not overwriting it") from None
    except OSError as exc:
        raise ConfigurationException(f"cannot write {exc.filename}: {exc.strerror}") from None
    return private_path, public_path
