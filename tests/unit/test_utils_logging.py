"""FLLogger: console + rotating file logging with the old format and handler setup."""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
import uuid
from collections.abc import Iterator

import pytest

from flwire.compat.utils.logging import FORMAT, FLLogger

LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} - (?P<name>\S+) - (?P<level>[A-Z]+) - "
    r"(?P<msg>.*)$"
)


@pytest.fixture
def logger_names() -> Iterator[list[str]]:
    """Names of loggers a test sets up; their handlers are closed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


@pytest.fixture
def name(logger_names: list[str]) -> str:
    value = f"flwire-test-{uuid.uuid4().hex[:8]}"
    logger_names.append(value)
    return value


def _flush(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.flush()


def _file_handlers(logger: logging.Logger) -> list[logging.handlers.RotatingFileHandler]:
    return [h for h in logger.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]


def _console_handlers(logger: logging.Logger) -> list[logging.StreamHandler]:
    return [
        h
        for h in logger.handlers
        if type(h) is logging.StreamHandler  # FileHandler subclasses StreamHandler
    ]


def test_format_is_the_legacy_one():
    assert FORMAT == "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def test_console_only_without_file(name):
    logger = FLLogger.setup_logger(name)
    assert logger is logging.getLogger(name)
    assert logger.name == name
    assert len(logger.handlers) == 1
    (console,) = _console_handlers(logger)
    assert console.stream is sys.stdout
    assert console.formatter is not None
    assert console.formatter._fmt == FORMAT
    assert logger.level == logging.INFO


def test_console_and_rotating_file(name, tmp_path):
    log_file = tmp_path / "fl.log"
    logger = FLLogger.setup_logger(name, str(log_file))
    assert len(logger.handlers) == 2
    assert len(_console_handlers(logger)) == 1
    (file_handler,) = _file_handlers(logger)
    assert file_handler.maxBytes == 10 * 1024 * 1024
    assert file_handler.backupCount == 5
    assert file_handler.baseFilename == str(log_file.resolve())
    assert file_handler.formatter is not None
    assert file_handler.formatter._fmt == FORMAT


def test_log_line_lands_in_file_with_legacy_format(name, tmp_path):
    log_file = tmp_path / "fl.log"
    logger = FLLogger.setup_logger(name, log_file)
    logger.info("hello federated world")
    logger.debug("not shown at INFO")
    _flush(logger)
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1
    match = LINE.match(lines[0])
    assert match, lines[0]
    assert match["name"] == name
    assert match["level"] == "INFO"
    assert match["msg"] == "hello federated world"


def test_log_line_goes_to_stdout(name, capsys):
    logger = FLLogger.setup_logger(name)
    logger.warning("to the console")
    _flush(logger)
    captured = capsys.readouterr()
    matching = [line for line in captured.out.splitlines() if "to the console" in line]
    assert len(matching) == 1
    match = LINE.match(matching[0])
    assert match and match["level"] == "WARNING" and match["name"] == name
    assert "to the console" not in captured.err


def test_repeat_setup_does_not_duplicate_handlers(name, tmp_path):
    log_file = tmp_path / "fl.log"
    first = FLLogger.setup_logger(name, log_file)
    count = len(first.handlers)
    second = FLLogger.setup_logger(name, log_file)
    assert second is first
    assert len(second.handlers) == count == 2
    second.info("once")
    _flush(second)
    assert log_file.read_text().count("once") == 1


def test_repeat_setup_without_file_drops_file_handler(name, tmp_path):
    logger = FLLogger.setup_logger(name, tmp_path / "fl.log")
    assert len(logger.handlers) == 2
    logger = FLLogger.setup_logger(name)
    assert len(logger.handlers) == 1
    assert not _file_handlers(logger)


def test_repeat_setup_many_times(name):
    for _ in range(5):
        logger = FLLogger.setup_logger(name)
    assert len(logger.handlers) == 1


def test_nested_log_directory_is_created(name, tmp_path):
    log_file = tmp_path / "a" / "b" / "c" / "fl.log"
    logger = FLLogger.setup_logger(name, log_file)
    logger.error("deep")
    _flush(logger)
    assert log_file.is_file()
    assert "deep" in log_file.read_text()


def test_log_file_in_current_directory(name, tmp_path, monkeypatch):
    # The old code called os.makedirs("") here and failed.
    monkeypatch.chdir(tmp_path)
    logger = FLLogger.setup_logger(name, "here.log")
    logger.info("cwd")
    _flush(logger)
    assert "cwd" in (tmp_path / "here.log").read_text()


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("DEBUG", logging.DEBUG),
        ("debug", logging.DEBUG),
        ("INFO", logging.INFO),
        ("Warning", logging.WARNING),
        ("ERROR", logging.ERROR),
        ("CRITICAL", logging.CRITICAL),
    ],
)
def test_levels(name, level, expected):
    assert FLLogger.setup_logger(name, level=level).level == expected


def test_debug_level_writes_debug_lines(name, tmp_path):
    log_file = tmp_path / "fl.log"
    logger = FLLogger.setup_logger(name, log_file, level="DEBUG")
    logger.debug("details")
    _flush(logger)
    assert " - DEBUG - details" in log_file.read_text()


@pytest.mark.parametrize("level", ["VERBOSE", "", "infoo", "Level 5"])
def test_invalid_level_raises_value_error(name, level):
    with pytest.raises(ValueError):
        FLLogger.setup_logger(name, level=level)


def test_federated_logging_names_logger_and_file(logger_names, tmp_path):
    logger_names.append("FL_client_7")
    log_dir = tmp_path / "logs" / "run1"
    logger = FLLogger.setup_federated_logging("client", "7", log_dir=str(log_dir))
    assert logger.name == "FL_client_7"
    assert logger.level == logging.INFO
    files = list(log_dir.iterdir())
    assert len(files) == 1
    assert re.fullmatch(r"client_7_\d{8}_\d{6}\.log", files[0].name), files[0].name
    (file_handler,) = _file_handlers(logger)
    assert file_handler.baseFilename == str(files[0].resolve())
    logger.info("round done")
    _flush(logger)
    match = LINE.match(files[0].read_text().splitlines()[0])
    assert match and match["name"] == "FL_client_7" and match["msg"] == "round done"


def test_federated_logging_server(logger_names, tmp_path):
    logger_names.append("FL_server_main")
    logger = FLLogger.setup_federated_logging("server", "main", log_dir=tmp_path)
    assert logger.name == "FL_server_main"
    (path,) = tmp_path.glob("server_main_*.log")
    assert re.fullmatch(r"server_main_\d{8}_\d{6}\.log", path.name)


def test_federated_logging_default_dir(logger_names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger_names.append("FL_client_x")
    FLLogger.setup_federated_logging("client", "x")
    assert len(list((tmp_path / "logs").glob("client_x_*.log"))) == 1


def test_federated_logging_repeat_keeps_handler_count(logger_names, tmp_path):
    logger_names.append("FL_client_r")
    FLLogger.setup_federated_logging("client", "r", log_dir=tmp_path)
    logger = FLLogger.setup_federated_logging("client", "r", log_dir=tmp_path)
    assert len(logger.handlers) == 2
