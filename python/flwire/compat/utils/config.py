"""ConfigManager: JSON/YAML configs, deep merges, defaults and environment
overrides (mirrors ``common.utils.config``).

Every error is a :class:`~flwire.exceptions.ConfigurationException` and also
what the old code raised in that case, so old ``except`` clauses still catch
it: a missing file is a ``FileNotFoundError``, an unsupported format or invalid
JSON a ``ValueError``, invalid YAML a ``yaml.YAMLError``, an unreadable file an
``OSError``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwire import _optional
from flwire.exceptions import ConfigurationException

ENV_PREFIX = "FLWIRE_"

_DEFAULTS: dict[str, dict[str, Any]] = {
    "client": {
        "kafka": {"bootstrap_servers": "localhost:9092", "group_id": "fl_clients"},
        "training": {"learning_rate": 0.001, "batch_size": 32, "epochs": 5},
    },
    "server": {
        "kafka": {"bootstrap_servers": "localhost:9092"},
        "aggregation": {"min_clients": 2, "max_wait_time": 300},
    },
}


class ConfigNotFoundError(ConfigurationException, FileNotFoundError):
    """The config file does not exist (the old code raised FileNotFoundError)."""


class ConfigValueError(ConfigurationException, ValueError):
    """Unsupported format, or content that is not a valid config (old: ValueError)."""


class ConfigReadError(ConfigurationException, OSError):
    """The config file exists but cannot be read (old: the OSError of open())."""


@functools.cache
def _yaml_error(yaml_error: type[Exception]) -> type[ConfigurationException]:
    """A ConfigurationException that is also PyYAML's YAMLError (what the old code
    let through), made once PyYAML is imported."""
    return type("ConfigYAMLError", (ConfigurationException, yaml_error), {})


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yml", ".yaml"):
        raise ConfigValueError(
            f"unsupported config format {path.suffix or '(none)'!r} for {path}: use .json, "
            ".yaml or .yml"
        )
    return suffix


class ConfigManager:
    """Configuration management for FL components."""

    @staticmethod
    def load_config(config_path: str | Path) -> dict[str, Any]:
        """Load a JSON or YAML config file into a dict."""
        path = Path(config_path)
        if not path.exists():  # checked first, as the old code did
            raise ConfigNotFoundError(f"config file not found: {path}")
        suffix = _suffix(path)
        yaml = None if suffix == ".json" else _optional.require("yaml")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigReadError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigValueError(f"config file {path} is not UTF-8 text: {exc}") from None
        if yaml is None:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigValueError(f"config file {path} is not valid JSON: {exc}") from None
        else:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise _yaml_error(yaml.YAMLError)(
                    f"config file {path} is not valid YAML: {exc}"
                ) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigValueError(
                f"config file {path} holds a {type(data).__name__}, expected a mapping at the top"
            )
        return data

    @staticmethod
    def save_config(config: Mapping[str, Any], config_path: str | Path) -> None:
        """Write a config as JSON or YAML (by extension), creating the directory."""
        path = Path(config_path)
        suffix = _suffix(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".json":
            path.write_text(json.dumps(config, indent=2))
        else:
            yaml = _optional.require("yaml")
            path.write_text(yaml.safe_dump(dict(config), default_flow_style=False))

    @staticmethod
    def merge_configs(*configs: Mapping[str, Any]) -> dict[str, Any]:
        """Merge configs left to right; nested sections merge deeply, so a later
        config's ``{"kafka": {"group_id": "x"}}`` keeps the earlier bootstrap servers."""
        merged: dict[str, Any] = {}
        for config in configs:
            _deep_merge(merged, config)
        return merged

    @staticmethod
    def get_default_config(component_type: str) -> dict[str, Any]:
        """Defaults for ``"client"`` or ``"server"`` (the old package's values)."""
        return copy.deepcopy(_DEFAULTS.get(component_type, {}))

    @staticmethod
    def apply_env_overrides(
        config: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Override config values from environment variables named
        ``FLWIRE_<SECTION>__<KEY>`` (double underscore between levels), e.g.
        ``FLWIRE_KAFKA__BOOTSTRAP_SERVERS=host:9092``. ``5`` becomes an int,
        ``0.1`` a float, ``true``/``false`` a bool; other values stay strings."""
        result = copy.deepcopy(dict(config))
        env = os.environ if environ is None else environ
        for name, raw in env.items():
            if not name.startswith(ENV_PREFIX) or "__" not in name:
                continue
            keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
            value = _env_value(raw)
            target = result
            for key in keys[:-1]:
                node = target.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ConfigurationException(
                        f"{name} overrides inside {key!r}, which is not a section"
                    )
                target = node
            target[keys[-1]] = value
        return result


def _env_value(raw: str) -> Any:
    """An environment value typed like a config scalar: "true"/"false" -> bool,
    "5" -> int, "0.1" -> float, "null" -> None; anything else stays a string."""
    text = raw.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return raw


def _deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
