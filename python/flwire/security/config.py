"""Signing and verification set up from a config dict and the environment.

The keys a component reads (each overridden by its environment variable):

- ``signing_key`` (``FLWIRE_SIGNING_KEY``): the path of this sender's private
  key (``<id>.key``, as ``flwire keys generate`` writes it); what it sends is
  signed. ``key_id`` (``FLWIRE_KEY_ID``): its id, by default the file's name
  without ``.key``; it must be the sender id of what it signs.
- ``trust_store`` (``FLWIRE_TRUST_STORE``): a directory of ``<id>.pub`` files
  or an ``id,public_key`` CSV (a client's holds the server's key only); what it
  receives is verified and, unless ``require_signatures`` is false, must be
  signed by one of them.
- ``timestamp_window_s`` (default 600): a signed message further than this
  from the receiver's clock is refused.

Without ``signing_key`` nothing is signed; without ``trust_store`` nothing is
verified (the old API's behaviour).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from flwire.exceptions import ConfigurationException, SenderMismatchError
from flwire.messages.message import Message
from flwire.security.keys import PRIVATE_SUFFIX, check_key_id, load_private_key
from flwire.security.signing import refuse_streamed, sign_in_place
from flwire.security.trust import load_trust_store
from flwire.security.verifier import DEFAULT_TIMESTAMP_WINDOW_S, Verifier

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: Config key -> the environment variable that overrides it.
ENVIRONMENT = {
    "signing_key": "FLWIRE_SIGNING_KEY",
    "key_id": "FLWIRE_KEY_ID",
    "trust_store": "FLWIRE_TRUST_STORE",
}
#: Every config key signer_from_config and verifier_from_config read.
CONFIG_KEYS = (*ENVIRONMENT, "require_signatures", "timestamp_window_s")


class Signer(NamedTuple):
    """A sender's key and its id (the sender id of what it signs)."""

    key_id: str
    key: Ed25519PrivateKey

    def attach(self, msg: Message) -> None:
        """Set ``msg``'s signature without joining its bytes. A message without a
        sender id is given the key id; another sender id is refused
        (SenderMismatchError)."""
        if not msg.sender_id:
            msg.envelope.sender_id = self.key_id
        elif msg.sender_id != self.key_id:
            raise SenderMismatchError(
                f"this sender signs as {self.key_id!r} but the message says it comes from "
                f"{msg.sender_id!r}: build it with sender_id={self.key_id!r}"
            )
        sign_in_place(msg, self.key_id, self.key)

    def sign(self, msg: Message) -> bytes:
        """:meth:`attach`, then the signed bytes (a streamed message has none:
        SignatureError; :meth:`attach` it and send it with a Channel)."""
        refuse_streamed(msg)
        self.attach(msg)
        return msg.to_bytes()


def _setting(config: Mapping[str, Any], name: str, environ: Mapping[str, str]) -> Any:
    env = environ.get(ENVIRONMENT[name])
    return env if env else config.get(name)


def signer_from_config(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Signer | None:
    """The Signer that ``signing_key`` (and ``key_id``) name, or None."""
    environ = os.environ if environ is None else environ
    path = _setting(config, "signing_key", environ)
    if not path:
        return None
    path = Path(path)
    key_id = _setting(config, "key_id", environ)
    if not key_id:
        if not path.name.endswith(PRIVATE_SUFFIX):
            raise ConfigurationException(
                f"signing_key {path} is not named <id>{PRIVATE_SUFFIX}: set key_id too"
            )
        key_id = path.name[: -len(PRIVATE_SUFFIX)]
    return Signer(check_key_id(str(key_id)), load_private_key(path))


def verifier_from_config(
    config: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    current_round: Callable[[], int | None] | None = None,
    name: str = "receiver",
) -> Verifier | None:
    """The Verifier that ``trust_store`` (``require_signatures``,
    ``timestamp_window_s``) configure, or None without a trust store."""
    environ = os.environ if environ is None else environ
    path = _setting(config, "trust_store", environ)
    if not path:
        return None
    window = config.get("timestamp_window_s", DEFAULT_TIMESTAMP_WINDOW_S)
    return Verifier(
        load_trust_store(Path(path)),
        require_signatures=bool(config.get("require_signatures", True)),
        timestamp_window_s=None if window is None else float(window),
        current_round=current_round,
        name=name,
    )
