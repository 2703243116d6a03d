"""ConfigManager: JSON/YAML files, deep merges, the old defaults and env overrides."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from flwire.compat.utils.config import ConfigManager
from flwire.exceptions import ConfigurationException, FLException

SAMPLE: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "broker:9092", "group_id": "g"},
    "training": {"learning_rate": 0.01, "batch_size": 64, "epochs": 3, "shuffle": True},
    "clients": ["a", "b"],
    "name": "run-1",
    "seed": None,
}

LEGACY_CLIENT_DEFAULTS = {
    "kafka": {"bootstrap_servers": "localhost:9092", "group_id": "fl_clients"},
    "training": {"learning_rate": 0.001, "batch_size": 32, "epochs": 5},
}
LEGACY_SERVER_DEFAULTS = {
    "kafka": {"bootstrap_servers": "localhost:9092"},
    "aggregation": {"min_clients": 2, "max_wait_time": 300},
}


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", ["config.json", "config.yaml", "config.yml", "CONFIG.YAML"])
def test_round_trip(tmp_path, name):
    path = tmp_path / name
    ConfigManager.save_config(SAMPLE, path)
    assert path.is_file()
    assert ConfigManager.load_config(path) == SAMPLE
    assert ConfigManager.load_config(str(path)) == SAMPLE


def test_json_file_is_json(tmp_path):
    path = tmp_path / "c.json"
    ConfigManager.save_config(SAMPLE, path)
    assert json.loads(path.read_text()) == SAMPLE


@pytest.mark.parametrize("name", ["c.yaml", "c.yml"])
def test_yaml_file_is_yaml(tmp_path, name):
    path = tmp_path / name
    ConfigManager.save_config(SAMPLE, path)
    text = path.read_text()
    assert not text.lstrip().startswith("{")  # block style, as the old default_flow_style=False
    assert yaml.safe_load(text) == SAMPLE


def test_save_creates_directories(tmp_path):
    path = tmp_path / "x" / "y" / "z" / "c.yaml"
    ConfigManager.save_config({"a": 1}, str(path))
    assert ConfigManager.load_config(path) == {"a": 1}


def test_load_handwritten_yaml(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("kafka:\n  bootstrap_servers: h:1\ntraining:\n  epochs: 2\n  lr: 1.0e-3\n")
    assert ConfigManager.load_config(path) == {
        "kafka": {"bootstrap_servers": "h:1"},
        "training": {"epochs": 2, "lr": 0.001},
    }


@pytest.mark.parametrize("name", ["empty.yaml", "empty.yml"])
@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_yaml_is_empty_dict(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert ConfigManager.load_config(path) == {}


@pytest.mark.parametrize("name", ["c.txt", "c.toml", "config", "c.json.bak"])
def test_unsupported_extension_on_load(tmp_path, name):
    path = tmp_path / name
    path.write_text("{}")
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["c.txt", "config"])
def test_unsupported_extension_on_save(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.save_config({"a": 1}, path)
    assert str(path) in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize("name", ["missing.json", "missing.yaml", "missing.yml"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.load_config(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FLException)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.json", "{not json"),
        ("bad.json", ""),
        ("bad.json", '{"a": 1,}'),
        ("bad.yaml", "a: [1, 2\n"),
        ("bad.yml", "a: b: c\n"),
        ("bad.yaml", "\tkey: value\n"),
    ],
)
def test_invalid_content(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["binary.json", "binary.yaml"])
def test_non_utf8_content(tmp_path, name):
    # Regression: a UnicodeDecodeError used to escape instead of a ConfigurationException.
    path = tmp_path / name
    path.write_bytes(b"\xff\xfe\x80 not text")
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.load_config(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path):
    # Regression: an IsADirectoryError used to escape instead of a ConfigurationException.
    path = tmp_path / "dir.json"
    path.mkdir()
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("list.json", "[1, 2, 3]"),
        ("str.json", '"just a string"'),
        ("num.json", "42"),
        ("list.yaml", "- a\n- b\n"),
        ("scalar.yml", "hello\n"),
        ("num.yaml", "3.5\n"),
    ],
)
def test_non_mapping_top_level(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.load_config(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- merge


def test_merge_is_deep():
    base = {"kafka": {"bootstrap_servers": "a:1", "group_id": "g"}, "x": 1}
    override = {"kafka": {"group_id": "h", "client_id": "c"}, "y": 2}
    assert ConfigManager.merge_configs(base, override) == {
        "kafka": {"bootstrap_servers": "a:1", "group_id": "h", "client_id": "c"},
        "x": 1,
        "y": 2,
    }


def test_merge_deep_at_several_levels():
    a = {"a": {"b": {"c": 1, "d": 2}, "e": 3}}
    b = {"a": {"b": {"d": 20, "f": 30}}}
    c = {"a": {"b": {"f": 300}, "g": 4}}
    assert ConfigManager.merge_configs(a, b, c) == {
        "a": {"b": {"c": 1, "d": 20, "f": 300}, "e": 3, "g": 4}
    }


def test_merge_later_wins_on_conflicts():
    merged = ConfigManager.merge_configs({"a": 1, "b": {"c": 1}}, {"a": 2}, {"a": 3})
    assert merged == {"a": 3, "b": {"c": 1}}


def test_merge_scalar_replaces_section_and_back():
    assert ConfigManager.merge_configs({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
    assert ConfigManager.merge_configs({"a": 5}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_merge_lists_are_replaced_not_concatenated():
    assert ConfigManager.merge_configs({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_merge_does_not_mutate_inputs():
    a = {"kafka": {"bootstrap_servers": "a:1"}, "l": [1]}
    b = {"kafka": {"group_id": "g"}, "l": [2]}
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    merged = ConfigManager.merge_configs(a, b)
    assert (a, b) == (a0, b0)
    merged["kafka"]["bootstrap_servers"] = "changed"
    merged["l"].append(3)
    assert (a, b) == (a0, b0)


def test_merge_result_does_not_share_nested_objects():
    a = {"s": {"k": [1]}}
    merged = ConfigManager.merge_configs(a)
    merged["s"]["k"].append(2)
    assert a == {"s": {"k": [1]}}


def test_merge_nothing():
    assert ConfigManager.merge_configs() == {}


def test_merge_defaults_with_file_overrides():
    defaults = ConfigManager.get_default_config("client")
    merged = ConfigManager.merge_configs(defaults, {"training": {"epochs": 1}})
    assert merged["training"] == {"learning_rate": 0.001, "batch_size": 32, "epochs": 1}
    assert merged["kafka"] == LEGACY_CLIENT_DEFAULTS["kafka"]


_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.lists(st.integers(), max_size=3)
)
_keys = st.sampled_from(["a", "b", "c", "kafka", "training", "x"])
configs = st.recursive(
    st.dictionaries(_keys, _leaves, max_size=4),
    lambda children: st.dictionaries(_keys, _leaves | children, max_size=4),
    max_leaves=12,
)


@given(configs)
def test_merge_with_empty_is_identity(a):
    assert ConfigManager.merge_configs(a) == a
    assert ConfigManager.merge_configs(a, {}) == a
    assert ConfigManager.merge_configs({}, a) == a
    assert ConfigManager.merge_configs({}, a, {}) == a


@given(configs)
def test_merge_is_idempotent(a):
    assert ConfigManager.merge_configs(a, a) == a


@given(configs, configs, configs)
def test_merge_properties(a, b, c):
    a0, b0, c0 = copy.deepcopy(a), copy.deepcopy(b), copy.deepcopy(c)
    merged = ConfigManager.merge_configs(a, b, c)
    # Keys of all inputs are present.
    assert set(merged) == set(a) | set(b) | set(c)
    # Merging many is the left fold of merging two.
    assert merged == ConfigManager.merge_configs(ConfigManager.merge_configs(a, b), c)
    # The last config's non-section values win.
    for key, value in c.items():
        if not isinstance(value, dict):
            assert merged[key] == value
    # Inputs untouched.
    assert (a, b, c) == (a0, b0, c0)


@given(configs, configs)
def test_merge_keeps_nested_keys_of_both(a, b):
    merged = ConfigManager.merge_configs(a, b)

    def check(result: dict, x: dict, y: dict) -> None:
        for key in set(x) | set(y):
            assert key in result
            if isinstance(x.get(key), dict) and isinstance(y.get(key), dict):
                check(result[key], x[key], y[key])

    check(merged, a, b)


# ----------------------------------------------------------------------------- defaults


def test_client_defaults_exactly_as_legacy():
    assert ConfigManager.get_default_config("client") == LEGACY_CLIENT_DEFAULTS


def test_server_defaults_exactly_as_legacy():
    assert ConfigManager.get_default_config("server") == LEGACY_SERVER_DEFAULTS


@pytest.mark.parametrize("component", ["aggregator", "", "Client", "SERVER"])
def test_unknown_component_defaults_empty(component):
    assert ConfigManager.get_default_config(component) == {}


@pytest.mark.parametrize("component", ["client", "server"])
def test_defaults_are_fresh_copies(component):
    first = ConfigManager.get_default_config(component)
    first["kafka"]["bootstrap_servers"] = "mutated:1"
    first["new"] = 1
    second = ConfigManager.get_default_config(component)
    assert second["kafka"]["bootstrap_servers"] == "localhost:9092"
    assert "new" not in second


def test_unknown_defaults_fresh_copy():
    ConfigManager.get_default_config("nope")["x"] = 1
    assert ConfigManager.get_default_config("nope") == {}


# ----------------------------------------------------------------------------- env overrides


def test_env_override_sets_nested_value():
    config = ConfigManager.get_default_config("client")
    result = ConfigManager.apply_env_overrides(
        config, environ={"FLWIRE_KAFKA__BOOTSTRAP_SERVERS": "broker-1:9093"}
    )
    assert result["kafka"] == {"bootstrap_servers": "broker-1:9093", "group_id": "fl_clients"}
    assert result["training"] == LEGACY_CLIENT_DEFAULTS["training"]


def test_env_override_does_not_mutate_input():
    config = ConfigManager.get_default_config("client")
    before = copy.deepcopy(config)
    ConfigManager.apply_env_overrides(config, environ={"FLWIRE_TRAINING__EPOCHS": "9"})
    assert config == before


def test_env_override_creates_sections():
    result = ConfigManager.apply_env_overrides(
        {}, environ={"FLWIRE_NEW__DEEP__KEY": "v", "FLWIRE_NEW__OTHER": "w"}
    )
    assert result == {"new": {"deep": {"key": "v"}, "other": "w"}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5", 5),
        ("-3", -3),
        ("0.1", 0.1),
        ("1.5e-3", 0.0015),
        ("true", True),
        ("false", False),
        ("True", True),
        ("localhost:9092", "localhost:9092"),
        ("fl_clients", "fl_clients"),
        ("kafka-1:9092,kafka-2:9092", "kafka-1:9092,kafka-2:9092"),
        ("hello world", "hello world"),
        ("", ""),
        ("null", None),
        ("~", None),
        # YAML structures and other non-scalar types stay the raw string.
        ("a: b", "a: b"),
        ("[1, 2]", "[1, 2]"),
        ("{x: 1}", "{x: 1}"),
        ("2024-01-01", "2024-01-01"),
        ("#s3cret", "#s3cret"),
    ],
)
def test_env_override_yaml_typing(raw, expected):
    result = ConfigManager.apply_env_overrides({}, environ={"FLWIRE_TRAINING__VALUE": raw})
    value = result["training"]["value"]
    assert value == expected
    assert type(value) is type(expected)


def test_env_override_typed_values_into_defaults():
    result = ConfigManager.apply_env_overrides(
        ConfigManager.get_default_config("client"),
        environ={
            "FLWIRE_TRAINING__EPOCHS": "5",
            "FLWIRE_TRAINING__LEARNING_RATE": "0.1",
            "FLWIRE_TRAINING__SHUFFLE": "true",
            "FLWIRE_KAFKA__GROUP_ID": "my_group",
        },
    )
    assert result["training"] == {
        "learning_rate": 0.1,
        "batch_size": 32,
        "epochs": 5,
        "shuffle": True,
    }
    assert result["kafka"]["group_id"] == "my_group"


@pytest.mark.parametrize("raw", ["#s3cret", "#"])
def test_env_override_value_starting_with_hash_stays_string(raw):
    # Regression: YAML reads "#..." as a comment; the value used to become None.
    result = ConfigManager.apply_env_overrides(
        {"kafka": {"sasl_password": "old"}}, environ={"FLWIRE_KAFKA__SASL_PASSWORD": raw}
    )
    assert result["kafka"]["sasl_password"] == raw


def test_env_override_ignores_unrelated_variables():
    config = ConfigManager.get_default_config("server")
    result = ConfigManager.apply_env_overrides(
        config,
        environ={
            "PATH": "/usr/bin",
            "HOME": "/root",
            "KAFKA__BOOTSTRAP_SERVERS": "nope:1",
            "flwire_kafka__bootstrap_servers": "nope:2",
            "XFLWIRE_KAFKA__BOOTSTRAP_SERVERS": "nope:3",
            "FLWIRE_VERSION": "1",  # no section separator
        },
    )
    assert result == LEGACY_SERVER_DEFAULTS


def test_env_override_empty_environ_is_copy():
    config = ConfigManager.get_default_config("client")
    result = ConfigManager.apply_env_overrides(config, environ={})
    assert result == config
    result["kafka"]["group_id"] = "x"
    assert config["kafka"]["group_id"] == "fl_clients"


def test_env_override_into_non_section_raises():
    config = {"kafka": "localhost:9092"}
    with pytest.raises(ConfigurationException) as info:
        ConfigManager.apply_env_overrides(
            config, environ={"FLWIRE_KAFKA__BOOTSTRAP_SERVERS": "b:1"}
        )
    assert "FLWIRE_KAFKA__BOOTSTRAP_SERVERS" in str(info.value)


def test_env_override_deep_into_scalar_raises():
    with pytest.raises(ConfigurationException):
        ConfigManager.apply_env_overrides(
            {"training": {"epochs": 5}}, environ={"FLWIRE_TRAINING__EPOCHS__MAX": "3"}
        )


def test_env_override_uses_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("FLWIRE_AGGREGATION__MIN_CLIENTS", "4")
    result = ConfigManager.apply_env_overrides(ConfigManager.get_default_config("server"))
    assert result["aggregation"] == {"min_clients": 4, "max_wait_time": 300}


def test_env_override_explicit_environ_ignores_os_environ(monkeypatch):
    monkeypatch.setenv("FLWIRE_AGGREGATION__MIN_CLIENTS", "4")
    result = ConfigManager.apply_env_overrides(
        ConfigManager.get_default_config("server"), environ={}
    )
    assert result["aggregation"]["min_clients"] == 2


# ------------------------------------------------- the old exception types still catch


def test_errors_are_also_what_the_old_code_raised(tmp_path):
    import yaml

    from flwire.compat.utils.config import ConfigManager

    cases = {
        "missing.json": (None, FileNotFoundError),
        "missing.toml": (None, FileNotFoundError),  # the old code checked existence first
        "bad.json": ("{not json", ValueError),
        "list.json": ("[1, 2]", ValueError),
        "config.toml": ("a = 1", ValueError),
        "bad.yaml": ("a: [1, 2", yaml.YAMLError),
        "latin1.json": (b"\xff\xfe{}", ValueError),
    }
    for name, (content, old_type) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(ConfigurationException) as info:
            ConfigManager.load_config(path)
        assert isinstance(info.value, old_type), (name, type(info.value).__mro__)
        assert str(path) in str(info.value), name
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(OSError) as unreadable:
        ConfigManager.load_config(folder)
    assert isinstance(unreadable.value, ConfigurationException)
