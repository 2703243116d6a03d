"""Utilities: logging, configuration, metrics (mirrors ``common.utils``)."""

from flwire.utils.config import ConfigManager
from flwire.utils.logging import FLLogger
from flwire.utils.metrics import MetricsCollector

__all__ = ["ConfigManager", "FLLogger", "MetricsCollector"]
