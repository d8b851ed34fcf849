"""Forward the package's ``logging`` records to the QGIS message log (tab "RS Text Search").

``install()`` and ``uninstall()`` are called by ``initGui`` and ``unload``; the handler is
thread-safe because ``QgsMessageLog.logMessage`` may be called from any thread.
"""

from __future__ import annotations

import logging

from qgis.core import Qgis, QgsMessageLog

__all__ = ["LOG_TAG", "QgsMessageLogHandler", "install", "uninstall"]

LOG_TAG = "RS Text Search"
_PACKAGE_LOGGER = "rs_text_search"


class QgsMessageLogHandler(logging.Handler):
    """A logging handler writing to ``QgsMessageLog`` with the matching QGIS message level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # a broken format string must never break the caller
            message = str(record.msg)
        if record.levelno >= logging.ERROR:
            level = Qgis.MessageLevel.Critical
        elif record.levelno >= logging.WARNING:
            level = Qgis.MessageLevel.Warning
        else:
            level = Qgis.MessageLevel.Info
        QgsMessageLog.logMessage(message, LOG_TAG, level, notifyUser=False)


def install() -> QgsMessageLogHandler:
    """Attach a handler to the package logger and return it (pass it to ``uninstall``)."""
    handler = QgsMessageLogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger(_PACKAGE_LOGGER)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def uninstall(handler: QgsMessageLogHandler | None) -> None:
    if handler is not None:
        logging.getLogger(_PACKAGE_LOGGER).removeHandler(handler)
