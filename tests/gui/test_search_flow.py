"""The analyst's path in real QGIS: index a scene, search by text, find similar, refine, export."""

from __future__ import annotations

import sqlite3

import pytest
from qgis.core import QgsProject, QgsRectangle, QgsVectorLayer
from qgis.gui import QgsMapToolPan
from qgis.PyQt.QtCore import QPoint, Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDialogButtonBox, QFileDialog, QMenu

from rs_text_search.core.export import FIELDS
from rs_text_search.gui.layers import EXPORT_LAYER_NAME, RESULTS_PROPERTY
from rs_text_search.gui.results import RESULT_ROLE

pytestmark = pytest.mark.qgis

SCENE = "massachusetts_22978945_15.tif"


def results_layers():
    return [layer for layer in QgsProject.instance().mapLayers().values() if layer.customProperty(RESULTS_PROPERTY)]


def bar_texts(iface) -> list[str]:
    return [item.text() for item in iface.messageBar().items()]


@pytest.fixture
def indexed(plugin, iface, scenes, qtbot, wait_idle):
    """The plugin with the Massachusetts scene added and indexed (at once when the cache has it)."""
    layer = iface.add_raster(scenes / SCENE)
    iface.mapCanvas().setExtent(layer.extent())
    plugin.controller.index_layers([layer])
    wait_idle(plugin.controller)
    assert plugin.dock.statusLabel.text() == "1 of 1 raster layer indexed", bar_texts(iface)
    return plugin, layer


def search(plugin, qtbot, wait_idle, text: str) -> None:
    dock = plugin.dock
    dock.queryEdit.clear()
    qtbot.keyClicks(dock.queryEdit, text)
    qtbot.keyClick(dock.queryEdit, Qt.Key_Return)
    wait_idle(plugin.controller)


def test_index_from_the_dock_then_search_with_enter(plugin, iface, scenes, fresh_cache, qtbot, wait_idle):
    layer = iface.add_raster(scenes / SCENE)
    iface.mapCanvas().setExtent(layer.extent())
    dock = plugin.dock
    assert dock.statusLabel.text() == "0 of 1 raster layer indexed"
    qtbot.mouseClick(dock.indexButton, Qt.LeftButton)
    chooser = dock.chooser
    assert chooser.isVisible() and [x.id() for x in chooser.checked_layers()] == [layer.id()]
    qtbot.mouseClick(chooser.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.LeftButton)
    assert plugin.controller.index_task is not None
    wait_idle(plugin.controller)
    assert dock.statusLabel.text() == "1 of 1 raster layer indexed"
    assert any("is indexed" in text for text in bar_texts(iface)), bar_texts(iface)

    search(plugin, qtbot, wait_idle, "parking lot with cars")
    view = dock.resultsView
    assert view.topLevelItemCount() == 10
    ranks = [int(view.topLevelItem(i).text(1)) for i in range(10)]
    scores = [float(view.topLevelItem(i).text(2)) for i in range(10)]
    assert ranks == list(range(1, 11)) and scores == sorted(scores, reverse=True)
    assert all(view.topLevelItem(i).text(3) == layer.name() for i in range(10))
    assert not view.topLevelItem(0).icon(0).isNull(), "each result shows a thumbnail of its tile"
    [results] = results_layers()
    assert results.featureCount() == 10
    assert [f.name() for f in results.fields()] == [name for name, _ in FIELDS]
    assert results.crs() == layer.crs()
    assert results.renderer().type() == "graduatedSymbol" and results.labelsEnabled()
    assert "CPU" in dock.providerLabel.text()

    # A new query replaces the temporary results layer.
    first_id = results.id()
    search(plugin, qtbot, wait_idle, "a pond")
    assert len(results_layers()) == 1 and results_layers()[0].id() != first_id


def test_click_zooms_and_flashes(indexed, iface, qtbot, wait_idle):
    plugin, layer = indexed
    search(plugin, qtbot, wait_idle, "houses with trees")
    view = plugin.dock.resultsView
    item = view.topLevelItem(2)
    result = item.data(0, RESULT_ROLE)
    view.scrollToItem(item)
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualItemRect(item).center())
    extent = iface.mapCanvas().extent()
    tile = QgsRectangle(*result.bounds)
    assert extent.contains(tile)
    assert extent.width() < 6 * tile.width(), "the map zoomed in to the tile"
    assert plugin.controller._highlight.band is not None
    band = plugin.controller._highlight.band
    assert band in iface.mapCanvas().items()

    # The outline belonged to those results: the next search takes it off the map.
    search(plugin, qtbot, wait_idle, "a pond")
    assert plugin.controller._highlight.band is None and band not in iface.mapCanvas().items()


def _right_click_menu_action(qtbot, canvas, pixel: QPoint, text: str) -> bool:
    """Right-click on the canvas and trigger ``text`` in the context menu that pops up."""
    triggered = []

    def pick() -> None:
        menu = QApplication.activePopupWidget()
        if isinstance(menu, QMenu):
            for action in menu.actions():
                if action.text() == text:
                    triggered.append(action)
            menu.close()
            if triggered:
                triggered[0].trigger()

    QTimer.singleShot(200, pick)
    qtbot.mouseClick(canvas.viewport(), Qt.RightButton, pos=pixel)
    qtbot.waitUntil(lambda: bool(triggered), timeout=5000)
    return bool(triggered)


def test_right_click_on_the_map_finds_similar_tiles(indexed, iface, qtbot, wait_idle):
    plugin, layer = indexed
    canvas = iface.mapCanvas()
    pan = QgsMapToolPan(canvas)
    canvas.setMapTool(pan)
    centre = layer.extent().center()
    pixel = canvas.getCoordinateTransform().transform(centre)
    assert _right_click_menu_action(qtbot, canvas, QPoint(int(pixel.x()), int(pixel.y())), "Find similar tiles")
    wait_idle(plugin.controller)
    controller = plugin.controller
    assert controller.request.label.startswith("similar to")
    [example] = controller.request.tiles
    assert example not in [r.tile_id for r in controller.results], "the example itself is not a result"
    assert plugin.dock.resultsView.topLevelItemCount() == 10
    assert len(results_layers()) == 1
    canvas.unsetMapTool(pan)


def test_map_tool_click_and_result_menu_similar(indexed, iface, qtbot, wait_idle):
    plugin, layer = indexed
    canvas = iface.mapCanvas()
    canvas.setMapTool(plugin.map_tool)
    pixel = canvas.getCoordinateTransform().transform(layer.extent().center())
    qtbot.mouseClick(canvas.viewport(), Qt.LeftButton, pos=QPoint(int(pixel.x()), int(pixel.y())))
    wait_idle(plugin.controller)
    assert plugin.controller.request.label.startswith("similar to the tile at")
    first = plugin.controller.results[0]
    menu = plugin.dock.resultsView.result_menu([first])
    next(a for a in menu.actions() if a.text() == "Find similar tiles").trigger()
    wait_idle(plugin.controller)
    assert plugin.controller.request.tiles == [first.tile_id]


def test_mark_good_and_bad_then_refine(indexed, iface, qtbot, wait_idle):
    plugin, _ = indexed
    search(plugin, qtbot, wait_idle, "parking lot")
    dock, controller = plugin.dock, plugin.controller
    good, bad = controller.results[0], controller.results[1]
    actions = {a.text(): a for a in dock.resultsView.result_menu([good]).actions()}
    actions["Mark as good example"].trigger()
    actions = {a.text(): a for a in dock.resultsView.result_menu([bad]).actions()}
    actions["Mark as bad example"].trigger()
    assert dock.refineBar.isVisibleTo(dock) and dock.marksLabel.text() == "1 good, 1 bad example"
    qtbot.mouseClick(dock.refineButton, Qt.LeftButton)
    wait_idle(controller)
    assert controller.request.texts == ["parking lot"]
    assert controller.request.tiles == [good.tile_id] and controller.request.negative_tiles == [bad.tile_id]
    assert "+1 good, -1 bad" in dock.summaryLabel.text()
    ids = [r.tile_id for r in controller.results]
    assert good.tile_id not in ids and bad.tile_id not in ids


def test_keep_results_layer(indexed, qtbot, wait_idle):
    plugin, _ = indexed
    search(plugin, qtbot, wait_idle, "road")
    plugin.dock.keepCheck.setChecked(True)
    search(plugin, qtbot, wait_idle, "water")
    assert len(results_layers()) == 2
    plugin.unload()
    assert len(results_layers()) == 1, "unloading removes the temporary results layer, not the kept one"


def test_scope_current_map_extent(indexed, iface, qtbot, wait_idle):
    plugin, layer = indexed
    canvas = iface.mapCanvas()
    extent = layer.extent()
    corner = QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.center().x(), extent.center().y())
    canvas.setExtent(corner)
    plugin.dock.scopeCombo.setCurrentIndex(1)
    search(plugin, qtbot, wait_idle, "trees")
    view_extent = canvas.extent()
    assert plugin.controller.results
    for result in plugin.controller.results:
        assert QgsRectangle(*result.bounds).intersects(view_extent)


def test_export_geopackage_with_fields_and_style(indexed, iface, qtbot, wait_idle, tmp_path, monkeypatch):
    from osgeo import ogr

    plugin, _ = indexed
    search(plugin, qtbot, wait_idle, "parking lot with cars")
    target = tmp_path / "matches.gpkg"
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (asked.append(a), (str(target), ""))[1]))
    project_folder = tmp_path / "project"
    QgsProject.instance().setPresetHomePath(str(project_folder))
    qtbot.mouseClick(plugin.dock.exportButton, Qt.LeftButton)
    QgsProject.instance().setPresetHomePath("")
    assert asked[0][2] == str(project_folder / "search_results.gpkg"), "the dialog opens in the project's folder"
    assert target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matches.gpkg"], "no temporary or side files left"

    source = ogr.Open(str(target))
    layer = source.GetLayerByName(EXPORT_LAYER_NAME)
    definition = layer.GetLayerDefn()
    fields = [(definition.GetFieldDefn(i).GetName(), definition.GetFieldDefn(i).GetTypeName())
              for i in range(definition.GetFieldCount())]
    assert [name for name, _ in fields] == [name for name, _ in FIELDS]
    assert dict(fields) == {"rank": "Integer", "score": "Real", "query": "String", "tile_id": "String",
                            "raster": "String", "model_name": "String", "model_sha256": "String",
                            "time": "DateTime"}
    assert layer.GetFeatureCount() == 10
    feature = layer.GetNextFeature()
    assert feature.GetField("query") == "parking lot with cars" and feature.GetField("rank") == 1
    assert feature.GetField("model_sha256") == plugin.controller.engine.loaded_model.sha256
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "26986"
    source = None

    with sqlite3.connect(target) as db:
        rows = db.execute("SELECT f_table_name, styleName, useAsDefault, styleQML FROM layer_styles").fetchall()
    assert len(rows) == 1
    table, style_name, default, qml = rows[0]
    assert table == EXPORT_LAYER_NAME and style_name == "rs_text_search" and default
    assert "graduatedSymbol" in qml and 'fieldName="rank"' in qml
    assert RESULTS_PROPERTY not in qml, "the saved style must not mark the export as a temporary results layer"

    # "Add to map" in the message bar opens it styled from the GeoPackage.
    button = iface.messageBar().findChild(type(plugin.dock.exportButton), "addExportButton")
    qtbot.mouseClick(button, Qt.LeftButton)
    [added] = QgsProject.instance().mapLayersByName("matches")
    assert added.featureCount() == 10 and added.renderer().type() == "graduatedSymbol"
    # Opened again later (Add Vector Layer), it is the analyst's data too.
    reopened = QgsVectorLayer(f"{target}|layername={EXPORT_LAYER_NAME}", "matches again", "ogr")
    QgsProject.instance().addMapLayer(reopened)
    ids = {added.id(), reopened.id()}

    # The next search and unloading the plugin replace only the temporary results layer.
    search(plugin, qtbot, wait_idle, "a pond")
    assert ids <= set(QgsProject.instance().mapLayers()), "an exported layer vanished after the next search"
    plugin.unload()
    assert ids <= set(QgsProject.instance().mapLayers()), "an exported layer vanished when the plugin unloaded"


def test_an_older_export_whose_style_carries_the_mark_is_kept(indexed, qtbot, wait_idle, tmp_path):
    """Exports made before the fix saved the results marker in their style; they are files, so they stay."""
    plugin, _ = indexed
    search(plugin, qtbot, wait_idle, "parking lot with cars")
    target = plugin.controller.export(str(tmp_path / "old.gpkg"), add_to_project=False)
    old = QgsVectorLayer(f"{target}|layername={EXPORT_LAYER_NAME}", "old export", "ogr")
    old.setCustomProperty(RESULTS_PROPERTY, True)
    QgsProject.instance().addMapLayer(old)
    search(plugin, qtbot, wait_idle, "a pond")
    assert QgsProject.instance().mapLayer(old.id()) is not None


def test_minimum_score_filters_results(indexed, iface, qtbot, wait_idle):
    plugin, _ = indexed
    dock = plugin.dock
    search(plugin, qtbot, wait_idle, "parking lot")
    assert len(results_layers()) == 1
    dock.minScoreSpin.setValue(0.99)
    search(plugin, qtbot, wait_idle, "parking lot")
    assert dock.resultsView.topLevelItemCount() == 0 and results_layers() == [], "no stale matches on the map"
    assert not dock.exportButton.isEnabled()
    assert any("No tile matched above the minimum score" in text for text in bar_texts(iface))
    dock.minScoreSpin.setValue(dock.minScoreSpin.minimum())  # "any score"
    search(plugin, qtbot, wait_idle, "parking lot")
    assert dock.resultsView.topLevelItemCount() == 10
