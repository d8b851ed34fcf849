"""Message bar entries that show their whole text.

A ``QgsMessageBarItem`` shows its text in a text browser about two lines high (42 px in QGIS
3.22), so a sentence that wraps to a third line was cut and needed scrolling. ``fit_text`` lets the
browser grow with its document, up to ``MAX_LINES`` lines; ``push`` does it for a new message.
"""

from __future__ import annotations

import contextlib

from qgis.core import Qgis
from qgis.gui import QgsMessageBar, QgsMessageBarItem
from qgis.PyQt.QtWidgets import QTextBrowser

__all__ = ["push", "fit_text", "MAX_LINES"]

MAX_LINES = 8  # beyond this the text scrolls: a message bar entry is no place for a report


def fit_text(item: QgsMessageBarItem) -> None:
    """Make the item's text browser as tall as its text (re-done whenever the text is laid out again)."""
    browser = item.findChild(QTextBrowser)
    if browser is None:
        return
    limit = browser.fontMetrics().lineSpacing() * MAX_LINES

    def resize(size) -> None:
        with contextlib.suppress(RuntimeError):  # the item was closed meanwhile
            margins = browser.contentsMargins()
            height = int(size.height()) + 2 * browser.frameWidth() + margins.top() + margins.bottom()
            browser.setFixedHeight(max(browser.fontMetrics().lineSpacing(), min(height, limit)))

    layout = browser.document().documentLayout()
    layout.documentSizeChanged.connect(resize)
    resize(layout.documentSize())


def push(bar: QgsMessageBar, title: str, text: str, level: Qgis.MessageLevel, seconds: int = 0,
         item: QgsMessageBarItem | None = None) -> QgsMessageBarItem:
    """Show ``text`` (or a prepared ``item``, e.g. with a button) on the bar, whole."""
    item = item or bar.createMessage(title, text)
    item.setLevel(level)
    item.setDuration(seconds)
    fit_text(item)
    bar.pushItem(item)
    return item
