"""Kafka security settings (TLS and SASL) from config and the environment.

:class:`~flwire.transport.kafka.KafkaTransport` (and through it the compat
``AsyncKafkaClient``) takes librdkafka's standard settings, :data:`SECURITY_KEYS`:
``security.protocol``, ``sasl.mechanisms``, ``sasl.username``, ``sasl.password``
and ``ssl.ca.location``. Each may come from

- config: the librdkafka name (``sasl.password``) or the same with underscores
  (``sasl_password``, like the compat config's ``bootstrap_servers``);
- the environment, which overrides config, as ``FLWIRE_KAFKA__<KEY>`` with the
  dots as underscores (``FLWIRE_KAFKA__SASL_PASSWORD``): the names that
  ``ConfigManager.apply_env_overrides`` (flwire.compat.utils.config)
  maps into the ``kafka`` section of a config.

The transport gives the result to every client it creates, the admin client
included. Passwords never reach a log line: :func:`redacted` masks them.

This module does not import confluent-kafka.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flwire.exceptions import ConfigurationException

#: librdkafka's security settings that flwire reads from config and the environment.
SECURITY_KEYS = (
    "security.protocol",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
)
#: Environment variables are named ``FLWIRE_KAFKA__`` + the key, upper case, dots as ``_``.
ENV_PREFIX = "FLWIRE_KAFKA__"
#: What :func:`redacted` shows instead of a secret.
MASK = "***"
_SASL_PROTOCOLS = ("sasl_ssl", "sasl_plaintext")


def env_name(key: str) -> str:
    """The environment variable that overrides ``key`` (``sasl.password`` ->
    ``FLWIRE_KAFKA__SASL_PASSWORD``)."""
    return ENV_PREFIX + key.upper().replace(".", "_")


def security_settings(
    config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The :data:`SECURITY_KEYS` found in ``config`` (dotted or underscored names)
    and in ``environ`` (default ``os.environ``; it wins), by their librdkafka names.
    Empty values are left out. Raises ConfigurationException when a setting is
    given twice in ``config`` with different values."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for key in SECURITY_KEYS:
        values = {
            str(config[name])
            for name in (key, key.replace(".", "_"))
            if config is not None and config.get(name) not in (None, "")
        }
        if len(values) > 1:
            raise ConfigurationException(
                f"Kafka setting {key!r} is given twice with different values (as {key!r} and "
                f"{key.replace('.', '_')!r}): keep one"
            )
        if values:
            found[key] = values.pop()
        value = env.get(env_name(key), "").strip()
        if value:
            found[key] = value
    return found


def check(config: Mapping[str, Any]) -> None:
    """Refuse SASL credentials that librdkafka would silently not use: a
    ``sasl.username``/``sasl.password`` with a ``security.protocol`` other than
    SASL_SSL or SASL_PLAINTEXT (the default is PLAINTEXT)."""
    protocol = str(config.get("security.protocol", "plaintext")).lower()
    given = [k for k in ("sasl.username", "sasl.password") if config.get(k)]
    if given and protocol not in _SASL_PROTOCOLS:
        raise ConfigurationException(
            f"{' and '.join(given)} set, but security.protocol is {protocol!r}, so they would "
            f"not be used: set security.protocol to SASL_SSL (or {env_name('security.protocol')}"
            "=SASL_SSL)"
        )


def is_secret(key: str) -> bool:
    """Whether a librdkafka setting holds a secret (a password or a private key)."""
    return key.endswith((".password", "sasl.jaas.config", ".key.pem", "oauthbearer.client.secret"))


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every secret (see :func:`is_secret`) shown as :data:`MASK`,
    fit for a log line; values that are not strings or numbers (callbacks,
    loggers) are left out."""
    return {
        key: MASK if is_secret(key) else value
        for key, value in config.items()
        if isinstance(value, str | int | float | bool)
    }


def describe(config: Mapping[str, Any]) -> str:
    """A short description of who a client is to the broker, for error messages:
    ``SASL user 'client-1' (SCRAM-SHA-512 over SASL_SSL)``, or the protocol alone."""
    protocol = str(config.get("security.protocol", "PLAINTEXT"))
    user = config.get("sasl.username")
    if user and protocol.lower() in _SASL_PROTOCOLS:
        mechanism = config.get("sasl.mechanisms", config.get("sasl.mechanism", "GSSAPI"))
        return f"SASL user {user!r} ({mechanism} over {protocol.upper()})"
    return f"an unauthenticated client ({protocol.upper()})"


def principal(config: Mapping[str, Any]) -> str:
    """The Kafka principal this client is (``User:client-1``), as ACLs name it;
    ``User:ANONYMOUS`` without SASL."""
    protocol = str(config.get("security.protocol", "plaintext")).lower()
    user = config.get("sasl.username")
    return f"User:{user}" if user and protocol in _SASL_PROTOCOLS else "User:ANONYMOUS"
