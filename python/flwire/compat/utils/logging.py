"""FLLogger: console + rotating-file logging (mirrors ``common.utils.logging``)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from datetime import datetime
from pathlib import Path

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


class FLLogger:
    """Federated learning logging setup."""

    @staticmethod
    def setup_logger(
        name: str, log_file: str | Path | None = None, level: str = "INFO"
    ) -> logging.Logger:
        """A logger writing to stdout and, if ``log_file`` is given, to a rotating
        file (10 MB x 5) whose directory is created. Calling it again for the
        same name replaces the handlers instead of adding duplicates."""
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
        logger = logging.getLogger(name)
        logger.setLevel(numeric)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        formatter = logging.Formatter(FORMAT)
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(formatter)
        logger.addHandler(console)
        if log_file:
            path = Path(log_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=10 * 1024 * 1024, backupCount=5
            )
            file_handler.setFormatter(formatter)
            logger.addHandler(file_handler)
        return logger

    @staticmethod
    def setup_federated_logging(
        component_type: str, component_id: str, log_dir: str | Path = "./logs"
    ) -> logging.Logger:
        """Logger ``FL_<type>_<id>`` writing to ``<log_dir>/<type>_<id>_<timestamp>.log``."""
        timestamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        log_file = Path(log_dir) / f"{component_type}_{component_id}_{timestamp}.log"
        return FLLogger.setup_logger(f"FL_{component_type}_{component_id}", log_file)
