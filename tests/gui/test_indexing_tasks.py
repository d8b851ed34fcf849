"""Indexing as QgsTask: cancel midway and resume, close the project meanwhile, bad input."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt

from rs_text_search.core.index import TileIndex
from rs_text_search.gui.settings import PluginSettings
from rs_text_search.gui.source import QgisRasterSource

pytestmark = pytest.mark.qgis

BIG_SCENE = "swellendam_3420B_2010_328_RGB_LATLNG.tif"  # 1098 x 3039 px: 18 x 48 tiles of 64 px
BIG_SCENE_TILES = 18 * 48


def bar_texts(iface) -> list[str]:
    return [item.text() for item in iface.messageBar().items()]


@pytest.fixture
def slow_reads(monkeypatch):
    """Make every tile read take a few milliseconds, so a test can cancel while batches are running."""
    original = QgisRasterSource.read_masked

    def slow(self, window, out_size=None):
        time.sleep(0.004)
        return original(self, window, out_size)

    monkeypatch.setattr(QgisRasterSource, "read_masked", slow)


def _catalog_rows(folder) -> int:
    index = TileIndex.open(folder)
    with index.connect() as db:
        return db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]


def test_cancel_midway_then_resume(plugin, iface, scenes, fresh_cache, slow_reads, qtbot, wait_idle):
    layer = iface.add_raster(scenes / BIG_SCENE)
    controller, dock = plugin.controller, plugin.dock
    task = controller.index_layers([layer])
    assert dock.indexProgress.isVisibleTo(dock) and dock.cancelButton.isVisibleTo(dock)
    qtbot.waitUntil(lambda: 10 <= task.progress() < 60, timeout=30_000)
    # The progress text fits the bar (the layer name can be long); the tooltip has all of it.
    bar = dock.indexProgress
    shown = bar.format().replace("%p", "100")
    assert bar.fontMetrics().horizontalAdvance(shown) <= bar.width(), (shown, bar.width())
    assert layer.name() in bar.toolTip() and "tiles" in bar.toolTip()
    qtbot.mouseClick(dock.cancelButton, Qt.LeftButton)
    wait_idle(controller)
    assert any("cancelled" in text and "resume" in text for text in bar_texts(iface)), bar_texts(iface)
    [folder] = list((fresh_cache / "indexes").iterdir())
    kept = _catalog_rows(folder)
    assert 0 < kept < BIG_SCENE_TILES, "finished batches are kept, the rest is not done"
    assert not TileIndex.open(folder).complete
    assert "partly indexed" in dock.statusLabel.toolTip()

    # Resume: the chooser ticks the partly indexed layer; the run starts after the kept tiles.
    dock.choose_layers()
    assert [x.id() for x in dock.chooser.checked_layers()] == [layer.id()]
    dock.chooser.accept()
    wait_idle(controller)
    assert any(f"resumed after {kept} tiles" in text for text in bar_texts(iface)), bar_texts(iface)
    assert TileIndex.open(folder).complete and _catalog_rows(folder) == BIG_SCENE_TILES
    assert dock.statusLabel.text() == "1 of 1 raster layer indexed"


def test_a_new_tile_size_asks_for_indexing_again_and_resumes_after_cancel(plugin, iface, scenes, fresh_cache,
                                                                         slow_reads, qtbot, wait_idle):
    """Issue 13: the old grid kept the layer 'indexed' and unticked; after a cancel, the chooser was empty."""
    from rs_text_search.gui.controller import LayerState

    layer = iface.add_raster(scenes / BIG_SCENE)
    controller, dock = plugin.controller, plugin.dock
    controller.set_settings(replace(controller.settings, tile_size_px=128))
    controller.index_layers([layer])
    wait_idle(controller)
    assert controller.layer_states() == [(layer, LayerState.INDEXED)]

    controller.set_settings(replace(controller.settings, tile_size_px=64))
    assert controller.layer_states() == [(layer, LayerState.OTHER_GRID)]
    assert dock.statusLabel.text() == "1 of 1 raster layer indexed (1 with another tile size)"
    dock.choose_layers()
    assert [x.id() for x in dock.chooser.checked_layers()] == [layer.id()], "ticked: it needs the new grid"
    dock.chooser.accept()
    task = controller.index_task
    qtbot.waitUntil(lambda: 10 <= task.progress() < 60, timeout=30_000)
    controller.cancel_indexing()
    wait_idle(controller)
    assert any("Index the layer again to resume" in text for text in bar_texts(iface)), bar_texts(iface)
    assert controller.layer_states() == [(layer, LayerState.PARTIAL)]

    dock.choose_layers()  # what the message asks for leads to the layer, ticked
    assert [x.id() for x in dock.chooser.checked_layers()] == [layer.id()]
    dock.chooser.accept()
    wait_idle(controller)
    assert not any("Choose at least one" in text for text in bar_texts(iface)), bar_texts(iface)
    assert any("resumed after" in text for text in bar_texts(iface)), bar_texts(iface)
    assert controller.layer_states() == [(layer, LayerState.INDEXED)]
    assert dock.statusLabel.text() == "1 of 1 raster layer indexed"


def test_closing_the_project_during_indexing(plugin, iface, scenes, fresh_cache, slow_reads, qtbot, wait_idle):
    layer = iface.add_raster(scenes / BIG_SCENE)
    controller = plugin.controller
    task = controller.index_layers([layer])
    qtbot.waitUntil(lambda: task.progress() > 5, timeout=30_000)
    QgsProject.instance().clear()  # QGIS cancels tasks whose dependent layers go away
    wait_idle(controller)
    assert controller.index_task is None
    assert any("project was closed while indexing" in text and "tiles are kept" in text
               for text in bar_texts(iface)), bar_texts(iface)
    assert not plugin.dock.indexProgress.isVisibleTo(plugin.dock)
    [folder] = list((fresh_cache / "indexes").iterdir())
    assert _catalog_rows(folder) > 0, "what was indexed before closing is kept"
    # The plugin still works in the next project.
    again = iface.add_raster(scenes / BIG_SCENE)
    assert plugin.dock.statusLabel.text() == "0 of 1 raster layer indexed"
    assert again.isValid()


def test_a_second_indexing_request_while_one_runs_is_refused(plugin, iface, scenes, fresh_cache, slow_reads,
                                                             qtbot, wait_idle):
    layer = iface.add_raster(scenes / BIG_SCENE)
    controller = plugin.controller
    assert controller.index_layers([layer]) is not None
    assert controller.index_layers([layer]) is None
    assert any("already running" in text for text in bar_texts(iface))
    controller.cancel_indexing()
    wait_idle(controller)


def test_bad_layers_get_a_clear_message(plugin, iface, scenes, fresh_cache, tmp_path, qtbot, wait_idle):
    controller = plugin.controller
    vector = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    QgsProject.instance().addMapLayer(vector)
    assert controller.index_layers([vector]) is None
    assert any("'points' is not a raster layer" in text for text in bar_texts(iface))

    broken_file = tmp_path / "broken.tif"
    broken_file.write_bytes(b"II*\x00 not really a tiff")
    broken = QgsRasterLayer(str(broken_file), "broken")
    QgsProject.instance().addMapLayer(broken, False)
    assert controller.index_layers([broken]) is None
    assert any("'broken' cannot be read" in text for text in bar_texts(iface))
    assert not (fresh_cache / "indexes").exists(), "nothing was written for bad input"


def test_layer_without_crs_is_indexed_in_its_own_coordinates(plugin, iface, scenes, fresh_cache, tmp_path,
                                                             qtbot, wait_idle):
    from osgeo import gdal

    plain = tmp_path / "no_crs.tif"
    source = gdal.Open(str(scenes / "landsat_RGB.byte.tif"))
    target = gdal.GetDriverByName("GTiff").Create(str(plain), 256, 256, 3, gdal.GDT_Byte)
    target.WriteRaster(0, 0, 256, 256, source.ReadRaster(300, 300, 256, 256))  # pixels, no CRS, no geotransform
    target = source = None
    layer = QgsRasterLayer(str(plain), "no_crs")
    layer.setCrs(QgsRasterLayer().crs())  # an invalid CRS, whatever the default-CRS setting says
    QgsProject.instance().addMapLayer(layer)
    task = plugin.controller.index_layers([layer])
    assert task is not None
    assert any("has no CRS" in text for text in bar_texts(iface))
    wait_idle(plugin.controller)
    assert any("'no_crs' is indexed" in text and "64 px tiles, as set in the options" in text
               for text in bar_texts(iface)), bar_texts(iface)


def test_query_before_indexing_and_empty_query(plugin, iface, scenes, fresh_cache, qtbot, wait_idle):
    iface.add_raster(scenes / "landsat_RGB.byte.tif")
    dock = plugin.dock
    qtbot.mouseClick(dock.searchButton, Qt.LeftButton)
    assert any("Type what to look for" in text for text in bar_texts(iface))
    qtbot.keyClicks(dock.queryEdit, "a river")
    qtbot.keyClick(dock.queryEdit, Qt.Key_Return)
    assert plugin.controller.search_task is None
    assert any("indexed with the model" in text and "Index layers" in text for text in bar_texts(iface))


def test_missing_model_folder(plugin, iface, scenes, fresh_cache, tmp_path, qtbot, allow_error_logs):
    layer = iface.add_raster(scenes / "landsat_RGB.byte.tif")
    controller = plugin.controller
    controller.set_settings(PluginSettings(model_dir=str(tmp_path / "nowhere"), tile_size_px=64))
    assert "No model found" in plugin.dock.providerLabel.text()
    assert controller.index_layers([layer]) is None
    assert any("No model directory found" in text and "settings" in text for text in bar_texts(iface))
    controller.search_text("fields")
    assert controller.search_task is None


def test_model_of_another_index_is_not_mixed(plugin, iface, scenes, cache, tmp_path, qtbot, wait_idle):
    """Indexes made by another model are not searched; the layer shows as not indexed."""
    from training.testing import make_tiny_model_dir

    layer = iface.add_raster(scenes / "massachusetts_22978945_15.tif")
    controller = plugin.controller
    controller.index_layers([layer])
    wait_idle(controller)
    assert plugin.dock.statusLabel.text() == "1 of 1 raster layer indexed"
    other = make_tiny_model_dir(tmp_path / "other", seed=1)
    settings = PluginSettings.load()
    settings.model_dir = str(other)
    controller.set_settings(settings)
    assert plugin.dock.statusLabel.text() == "0 of 1 raster layer indexed"
    controller.search_text("houses")
    assert controller.search_task is None
    assert any("indexed with the model 'tiny-clip_bpe-seed1'" in text for text in bar_texts(iface))


def test_cancel_right_after_starting(plugin, iface, scenes, fresh_cache, slow_reads, qtbot, wait_idle):
    layer = iface.add_raster(scenes / BIG_SCENE)
    controller = plugin.controller
    controller.index_layers([layer])
    controller.cancel_indexing()  # before or just after run() started: both end cleanly
    wait_idle(controller)
    assert any("cancelled" in text for text in bar_texts(iface)), bar_texts(iface)
    assert plugin.dock.indexButton.isEnabled() and not plugin.dock.cancelButton.isVisibleTo(plugin.dock)


def test_unloading_while_indexing(iface, plugin_settings, fresh_cache, scenes, slow_reads, qtbot):
    import rs_text_search

    from .conftest import flush_deletes

    plugin = rs_text_search.classFactory(iface)
    plugin.initGui()
    layer = iface.add_raster(scenes / BIG_SCENE)
    task = plugin.controller.index_layers([layer])
    qtbot.waitUntil(lambda: task.progress() > 2, timeout=30_000)
    plugin.unload()  # cancels the task and waits for it
    flush_deletes()
    qtbot.wait(200)  # the task's finished() arrives after unload: it must do nothing
    assert iface.mainWindow().findChild(type(iface.mainWindow()), "RsTextSearchDock") is None
    [folder] = list((fresh_cache / "indexes").iterdir())
    assert _catalog_rows(folder) > 0


def test_closing_the_project_during_a_search(plugin, iface, scenes, cache, monkeypatch, qtbot, wait_idle):
    layer = iface.add_raster(scenes / "massachusetts_22978945_15.tif")
    controller = plugin.controller
    controller.index_layers([layer])
    wait_idle(controller)
    original = QgisRasterSource.read

    def slow_thumbnail(self, window, out_size=None):
        time.sleep(0.05)
        return original(self, window, out_size)

    monkeypatch.setattr(QgisRasterSource, "read", slow_thumbnail)
    task = controller.search_text("houses")
    assert task is not None
    QgsProject.instance().clear()
    wait_idle(controller)
    assert controller.results == [] and QgsProject.instance().mapLayers() == {}
    assert plugin.dock.resultsView.topLevelItemCount() == 0


def test_indexes_are_reused_when_the_project_is_opened_again(plugin, iface, scenes, cache, tmp_path, qtbot,
                                                             wait_idle):
    project = QgsProject.instance()
    layer = iface.add_raster(scenes / "massachusetts_22978945_15.tif")
    plugin.controller.index_layers([layer])
    wait_idle(plugin.controller)
    path = tmp_path / "analysis.qgz"
    assert project.write(str(path))
    project.clear()
    assert plugin.dock.statusLabel.text() == "No raster layer in the project"
    assert project.read(str(path))
    assert plugin.dock.statusLabel.text() == "1 of 1 raster layer indexed"
    plugin.controller.search_text("trees")
    assert plugin.controller.index_task is None
    wait_idle(plugin.controller)
    assert len(plugin.controller.results) == 10


def test_automatic_tiles_cover_the_training_ground_and_the_layer_shows_as_indexed(
        plugin, iface, scenes, fresh_cache, tiny_model_dir, tmp_path, wait_idle):
    """With no tile size set, the task cuts tiles from the layer's pixel size and the model's training
    resolution, and the dock finds that index again (the GUI thread computes the same grid)."""
    import json
    import shutil

    from rs_text_search.gui.controller import LayerState

    model = tmp_path / "tiny-ucm"
    shutil.copytree(tiny_model_dir, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["ground_m_per_px"] = 3.0  # 32 px inputs covered 96 m: 96 px tiles on the 1 m scene
    (model / "manifest.json").write_text(json.dumps(manifest))
    plugin.controller.set_settings(PluginSettings(model_dir=str(model), provider="cpu", tile_size_px=0))
    layer = QgsRasterLayer(str(scenes / "massachusetts_22978945_15.tif"), "mass")
    QgsProject.instance().addMapLayer(layer)
    assert plugin.controller.index_layers([layer]) is not None
    wait_idle(plugin.controller)
    assert any("'mass' is indexed" in text and "96 px tiles (1 m pixels, 96 m tiles)" in text
               for text in bar_texts(iface)), bar_texts(iface)
    (folder,) = (fresh_cache / "indexes").iterdir()
    assert TileIndex.open(folder).meta["grid"]["tile_size_px"] == 96
    assert dict((lyr.name(), state) for lyr, state in plugin.controller.layer_states())["mass"] == LayerState.INDEXED
