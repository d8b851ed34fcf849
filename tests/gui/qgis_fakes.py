"""A real-widget ``QgisInterface`` for tests, importable without pytest (the stock-QGIS check runs it too).

``qgis.testing.mocked.get_iface`` needs the ``mock`` package and gives a Mock, so instead
``FakeIface`` implements the part of ``QgisInterface`` the plugin uses with real objects: a
QMainWindow with a Raster menu and toolbar, a QgsMapCanvas kept in sync with the project's layer
tree, a layer tree view and a QgsMessageBar. Calling anything else raises AttributeError.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsLayerTreeModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas, QgsMessageBar
from qgis.PyQt.QtCore import QCoreApplication, QEvent, Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QDockWidget, QMainWindow, QMenu, QVBoxLayout, QWidget

__all__ = ["FakeIface", "flush_deletes"]


class FakeIface:
    """The part of ``QgisInterface`` the plugin uses, made of real widgets."""

    def __init__(self) -> None:
        self.window = QMainWindow()
        self.window.setObjectName("QgisApp")
        self.window.setWindowTitle("QGIS — rs_text_search test")
        self.window.resize(1400, 860)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.bar = QgsMessageBar(central)
        self.canvas = QgsMapCanvas(central)
        self.canvas.setObjectName("theMapCanvas")
        self.canvas.setCanvasColor(QColor(255, 255, 255))
        layout.addWidget(self.bar)
        layout.addWidget(self.canvas, 1)
        self.window.setCentralWidget(central)
        self.raster_menu = self.window.menuBar().addMenu("&Raster")
        self.raster_toolbar = self.window.addToolBar("Raster")
        self.raster_toolbar.setObjectName("mRasterToolBar")
        root = QgsProject.instance().layerTreeRoot()
        self.bridge = QgsLayerTreeMapCanvasBridge(root, self.canvas)
        self.tree_model = QgsLayerTreeModel(root)
        self.tree_view = QgsLayerTreeView()
        self.tree_view.setModel(self.tree_model)
        layers_dock = QDockWidget("Layers", self.window)
        layers_dock.setObjectName("Layers")
        layers_dock.setWidget(self.tree_view)
        self.window.addDockWidget(Qt.LeftDockWidgetArea, layers_dock)

    # -- QgisInterface ---------------------------------------------------------------------------
    def mainWindow(self) -> QMainWindow:  # noqa: N802
        return self.window

    def mapCanvas(self) -> QgsMapCanvas:  # noqa: N802
        return self.canvas

    def messageBar(self) -> QgsMessageBar:  # noqa: N802
        return self.bar

    def layerTreeView(self) -> QgsLayerTreeView:  # noqa: N802
        return self.tree_view

    def activeLayer(self):  # noqa: N802
        return self.tree_view.currentLayer()

    def addDockWidget(self, area, dock) -> None:  # noqa: N802
        self.window.addDockWidget(area, dock)

    def removeDockWidget(self, dock) -> None:  # noqa: N802
        self.window.removeDockWidget(dock)

    def _submenu(self, name: str) -> QMenu | None:
        for action in self.raster_menu.actions():
            if action.menu() is not None and action.menu().title() == name:
                return action.menu()
        return None

    def addPluginToRasterMenu(self, name: str, action) -> None:  # noqa: N802 - as QgisApp does it
        menu = self._submenu(name) or self.raster_menu.addMenu(name)
        menu.addAction(action)

    def removePluginRasterMenu(self, name: str, action) -> None:  # noqa: N802
        menu = self._submenu(name)
        if menu is None:
            return
        menu.removeAction(action)
        if not menu.actions():
            self.raster_menu.removeAction(menu.menuAction())
            menu.deleteLater()

    def addToolBar(self, name: str):  # noqa: N802 - QgisInterface.addToolBar(name) -> QToolBar
        return self.window.addToolBar(name)

    def addRasterToolBarIcon(self, action) -> None:  # noqa: N802
        self.raster_toolbar.addAction(action)

    def removeRasterToolBarIcon(self, action) -> None:  # noqa: N802
        self.raster_toolbar.removeAction(action)

    # -- for the tests ---------------------------------------------------------------------------
    def add_raster(self, path: Path, name: str | None = None) -> QgsRasterLayer:
        layer = QgsRasterLayer(str(path), name or path.stem)
        assert layer.isValid(), f"QGIS cannot open {path}"
        QgsProject.instance().addMapLayer(layer)
        return layer

    def close(self) -> None:
        self.window.close()
        self.bridge.deleteLater()
        self.window.deleteLater()


def flush_deletes() -> None:
    """Run pending deleteLater() calls (they wait for the event loop otherwise)."""
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()
