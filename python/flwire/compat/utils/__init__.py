"""Utilities: logging, configuration, metrics (mirrors ``common.utils``)."""

from flwire.compat.utils.config import ConfigManager
from flwire.compat.utils.logging import FLLogger
from flwire.compat.utils.metrics import MetricsCollector

__all__ = ["ConfigManager", "FLLogger", "MetricsCollector"]
