"""A screenshot of the main window with the dock and highlighted results, for a human to look at."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProject
from qgis.PyQt.QtCore import Qt

pytestmark = pytest.mark.qgis

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # ignored by git


def test_screenshot_of_a_search(plugin, iface, scenes, qtbot, wait_idle):
    layer = iface.add_raster(scenes / "massachusetts_22978945_15.tif", "Massachusetts, 1 m orthophoto")
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    plugin.controller.index_layers([layer])
    wait_idle(plugin.controller)
    dock = plugin.dock
    iface.mainWindow().resizeDocks([dock], [420], Qt.Horizontal)
    dock.topKSpin.setValue(12)
    qtbot.keyClicks(dock.queryEdit, "parking lot with cars")
    qtbot.keyClick(dock.queryEdit, Qt.Key_Return)
    wait_idle(plugin.controller)
    view = dock.resultsView
    item = view.topLevelItem(0)
    view.setCurrentItem(item)
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualItemRect(item).center())
    for name, mark in ((1, 1), (3, -1)):  # one good and one bad example show the refine bar
        plugin.controller.mark(plugin.controller.results[name].tile_id, mark)
    iface.messageBar().clearWidgets()
    iface.tree_view.setCurrentLayer(plugin.controller.results_layer())
    extent = layer.extent()
    extent.scale(1.02)
    canvas.setExtent(extent)
    canvas.refreshAllLayers()
    qtbot.wait(100)
    qtbot.waitUntil(lambda: not canvas.isDrawing(), timeout=20_000)
    qtbot.wait(300)  # let the flash animation finish
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / "plugin_search.png"
    assert iface.mainWindow().grab().save(str(target))
    assert target.stat().st_size > 50_000
    assert len(QgsProject.instance().mapLayers()) == 2
