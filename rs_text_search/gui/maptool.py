"""Right-click on the map: "Find similar tiles" for the tile under the cursor.

Two ways in, both removed on unload:

- ``CanvasMenuHook`` adds the entry to the canvas's own context menu (shown by the pan tool and
  every other tool that offers one), so the analyst never has to switch tools;
- ``SimilarTileTool`` is a map tool from the toolbar: a left click searches at once, a right
  click offers the same menu.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from qgis.core import QgsPointXY
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapToolEmitPoint
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QMenu

from .canvas import crs_string
from .meta import tr

__all__ = ["SimilarTileTool", "CanvasMenuHook", "MENU_TEXT"]

MENU_TEXT = "Find similar tiles"
FindAt = Callable[[float, float, str], object]  # (x, y, CRS string) -> anything


def _add_entry(menu: QMenu, canvas: QgsMapCanvas, point: QgsPointXY, find_at: FindAt) -> None:
    crs = crs_string(canvas.mapSettings().destinationCrs())
    x, y = point.x(), point.y()
    action = menu.addAction(tr("Find similar tiles"))  # MENU_TEXT
    action.setObjectName("rsFindSimilarAction")
    action.setToolTip(tr("Search every indexed layer for tiles that look like the tile under the cursor"))
    action.triggered.connect(lambda _checked=False: find_at(x, y, crs))


class SimilarTileTool(QgsMapToolEmitPoint):
    """Click a tile to find tiles that look like it."""

    def __init__(self, canvas: QgsMapCanvas, find_at: FindAt) -> None:
        super().__init__(canvas)
        self._find_at = find_at
        self.setCursor(Qt.CursorShape.WhatsThisCursor)

    def flags(self):
        return super().flags() | QgsMapToolEmitPoint.Flag.ShowContextMenu

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            point = event.mapPoint()
            self._find_at(point.x(), point.y(), crs_string(self.canvas().mapSettings().destinationCrs()))

    def populateContextMenuWithEvent(self, menu: QMenu, event: QgsMapMouseEvent) -> bool:  # noqa: N802
        _add_entry(menu, self.canvas(), event.mapPoint(), self._find_at)
        return True


class CanvasMenuHook:
    """Adds "Find similar tiles" to the canvas context menu until ``disconnect()``."""

    def __init__(self, canvas: QgsMapCanvas, find_at: FindAt) -> None:
        self.canvas = canvas
        self._find_at = find_at
        canvas.contextMenuAboutToShow.connect(self._populate)

    def _populate(self, menu: QMenu, event: QgsMapMouseEvent) -> None:
        if any(a.objectName() == "rsFindSimilarAction" for a in menu.actions()):
            return  # our own map tool added it already
        menu.addSeparator()
        _add_entry(menu, self.canvas, event.mapPoint(), self._find_at)

    def disconnect(self) -> None:
        with contextlib.suppress(TypeError, RuntimeError):
            self.canvas.contextMenuAboutToShow.disconnect(self._populate)
