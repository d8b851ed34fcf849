"""The results list of the dock: rank, score, layer and a thumbnail of each tile.

Clicking a result zooms to and flashes its tile; the context menu finds similar tiles, marks
results as good or bad examples (shown by colour and by text), zooms, or copies tile ids.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QBrush, QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QAbstractItemView, QApplication, QHeaderView, QMenu, QTreeWidget, QTreeWidgetItem

from ..core.search import SearchResult
from .controller import Controller
from .meta import tr
from .tasks import THUMBNAIL_PX

__all__ = ["ResultsView", "RESULT_ROLE"]

RESULT_ROLE = Qt.ItemDataRole.UserRole + 1
GOOD_BRUSH, BAD_BRUSH = QBrush(QColor(46, 160, 67, 60)), QBrush(QColor(218, 54, 51, 60))
COLUMNS = ["Tile", "#", "Score", "Layer"]


class ResultsView(QTreeWidget):
    """Object name ``resultsView``; ``extent_only()`` tells whether searches stay in the map extent."""

    def __init__(self, controller: Controller, extent_only: Callable[[], bool]) -> None:
        super().__init__()
        self.setObjectName("resultsView")
        self.controller = controller
        self.extent_only = extent_only
        self.setColumnCount(len(COLUMNS))
        self.setHeaderLabels(COLUMNS)
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setIconSize(QSize(THUMBNAIL_PX - 16, THUMBNAIL_PX - 16))
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header = self.header()
        for column in range(3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.itemClicked.connect(self._clicked)
        self.itemActivated.connect(self._clicked)
        self.customContextMenuRequested.connect(self._show_menu)

    def render_results(self) -> None:
        controller = self.controller
        self.clear()
        items = []
        for result in controller.results:
            item = QTreeWidgetItem(["", str(result.rank), f"{result.score:.3f}", controller.layer_name(result)])
            image = controller.thumbnails.get(result.tile_id)
            if image is not None and not image.isNull():
                item.setIcon(0, QIcon(QPixmap.fromImage(image)))
            item.setData(0, RESULT_ROLE, result)
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setToolTip(3, f"{result.raster}\ntile {result.tile_id}")
            items.append(item)
        self.addTopLevelItems(items)

    def render_marks(self) -> None:
        marks = self.controller.marks
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            result = item.data(0, RESULT_ROLE)
            mark = marks.get(result.tile_id, 0)
            brush = GOOD_BRUSH if mark > 0 else BAD_BRUSH if mark < 0 else QBrush()
            for column in range(len(COLUMNS)):
                item.setBackground(column, brush)
            # Colour is not the only cue: the layer column also says how the result was marked.
            name = self.controller.layer_name(result)
            item.setText(3, ("✔ good · " if mark > 0 else "✘ bad · " if mark < 0 else "") + name)

    def selected_results(self) -> list[SearchResult]:
        return [item.data(0, RESULT_ROLE) for item in self.selectedItems()]

    def result_menu(self, results: list[SearchResult]) -> QMenu:
        """The context menu for some results (its own method so tests can trigger its actions)."""
        controller = self.controller
        menu = QMenu(self)
        ids = [r.tile_id for r in results]
        menu.addAction(tr("Find similar tiles"), lambda: controller.find_similar(ids, self.extent_only()))
        menu.addSeparator()
        menu.addAction(tr("Mark as good example"), lambda: [controller.mark(t, 1) for t in ids])
        menu.addAction(tr("Mark as bad example"), lambda: [controller.mark(t, -1) for t in ids])
        menu.addAction(tr("Clear mark"), lambda: [controller.mark(t, 0) for t in ids])
        menu.addSeparator()
        menu.addAction(tr("Zoom to tile"), lambda: controller.show_result(results[0]))
        menu.addAction(tr("Copy tile id"), lambda: QApplication.clipboard().setText("\n".join(ids)))
        return menu

    def _clicked(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        result = item.data(0, RESULT_ROLE)
        if result is not None:
            self.controller.show_result(result)

    def _show_menu(self, position) -> None:
        results = self.selected_results()
        if results:
            self.result_menu(results).popup(self.viewport().mapToGlobal(position))
