"""Loading and unloading the plugin through classFactory leaves nothing behind, twice over."""

from __future__ import annotations

import logging

import pytest
from qgis.core import QgsApplication, QgsProject
from qgis.gui import QgsMapTool
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QToolBar, QWidget

import rs_text_search
from rs_text_search.gui.layers import RESULTS_PROPERTY

from .conftest import flush_deletes

pytestmark = pytest.mark.qgis


def _snapshot(iface) -> dict:
    """Everything a plugin could leave behind, counted."""
    project = QgsProject.instance()
    window, canvas = iface.mainWindow(), iface.mapCanvas()
    return {
        "docks": sorted(d.objectName() for d in window.findChildren(QDockWidget)),
        "actions": len(window.findChildren(QAction)),
        "widgets": len(window.findChildren(QWidget)),
        "raster_menu": [a.text() for a in iface.raster_menu.actions()],
        "toolbar": [a.text() for a in iface.raster_toolbar.actions()],
        "toolbars": sorted(t.objectName() for t in window.findChildren(QToolBar)),
        "map_tools": len(canvas.findChildren(QgsMapTool)),
        "map_tool": canvas.mapTool(),
        "canvas_items": len(canvas.items()),
        "providers": sorted(p.id() for p in QgsApplication.processingRegistry().providers()),
        "layers": sorted(project.mapLayers()),
        "results_layers": [lid for lid, layer in project.mapLayers().items() if layer.customProperty(RESULTS_PROPERTY)],
        "receivers": {name: project.receivers(getattr(project, name))
                      for name in ("cleared", "layersAdded", "layersRemoved", "readProject")},
        "canvas_menu_receivers": canvas.receivers(canvas.contextMenuAboutToShow),
        "log_handlers": len(logging.getLogger("rs_text_search").handlers),
    }


def test_load_unload_twice_leaves_nothing_behind(iface, plugin_settings, cache, qtbot):
    flush_deletes()
    before = _snapshot(iface)
    for _ in range(2):
        plugin = rs_text_search.classFactory(iface)
        plugin.initGui()
        loaded = _snapshot(iface)
        assert "RsTextSearchDock" in loaded["docks"]
        assert any(a.menu() and a.menu().title() == "&RS Text Search" for a in iface.raster_menu.actions())
        assert "rs_text_search" in loaded["providers"]
        # Its own toolbar (the Raster toolbar is hidden in a fresh profile), and a Help entry.
        toolbar = iface.mainWindow().findChild(QToolBar, "RsTextSearchToolbar")
        assert [a.objectName() for a in toolbar.actions()][1:] == ["rsIndexLayers", "rsFindSimilarTool"]
        assert loaded["toolbar"] == before["toolbar"], "nothing on the Raster toolbar"
        menu = next(a.menu() for a in iface.raster_menu.actions() if a.menu() and a.menu().title() == "&RS Text Search")
        assert [a.text() for a in menu.actions()][-1] == "Help"
        assert not toolbar.actions()[2].icon().isNull()
        assert loaded["canvas_menu_receivers"] == before["canvas_menu_receivers"] + 1
        assert loaded["receivers"]["layersAdded"] > before["receivers"]["layersAdded"]
        plugin.iface.mapCanvas().setMapTool(plugin.map_tool)
        plugin.unload()
        flush_deletes()
        after = _snapshot(iface)
        assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def test_dock_has_the_names_checks_rely_on(plugin, iface):
    from qgis.PyQt.QtWidgets import QLabel, QLineEdit, QPushButton, QSpinBox, QTreeWidget

    dock = iface.mainWindow().findChild(QDockWidget, "RsTextSearchDock")
    assert dock is not None and dock.isVisible()
    for kind, name in ((QLineEdit, "queryEdit"), (QPushButton, "searchButton"), (QSpinBox, "topKSpin"),
                       (QTreeWidget, "resultsView"), (QPushButton, "indexButton"), (QPushButton, "exportButton"),
                       (QLabel, "providerLabel")):
        assert dock.findChild(kind, name) is not None, name
    assert "tiny" in dock.findChild(QLabel, "providerLabel").text()


def test_logging_reaches_the_qgis_message_log(plugin, qtbot):
    received = []

    def keep(message: str, tag: str, _level) -> None:
        received.append((message, tag))

    log = QgsApplication.messageLog()
    log.messageReceived.connect(keep)
    try:
        logging.getLogger("rs_text_search.gui.test").warning("a sentence for the log panel")
        qtbot.waitUntil(lambda: bool(received), timeout=2000)
    finally:
        log.messageReceived.disconnect(keep)
    assert ("rs_text_search.gui.test: a sentence for the log panel", "RS Text Search") in received


def test_one_name_a_help_address_and_the_algorithms_help(plugin, iface):
    from qgis.core import QgsApplication

    from rs_text_search.gui.meta import PLUGIN_NAME, help_url

    assert plugin.dock.windowTitle() == PLUGIN_NAME and plugin.actions[0].text() == f"{PLUGIN_NAME} panel"
    assert help_url().startswith("https://") and help_url().endswith("#the-qgis-plugin")
    provider = QgsApplication.processingRegistry().providerById("rs_text_search")
    assert provider.name() == PLUGIN_NAME
    for algorithm in provider.algorithms():
        assert algorithm.helpUrl() == help_url() and algorithm.group() == ""


def test_the_translation_for_qgis_locale_is_loaded_and_removed_on_unload(iface, plugin_settings, cache, tmp_path):
    import shutil
    import subprocess

    from qgis.core import QgsSettings

    from rs_text_search.gui import meta

    if shutil.which("lrelease") is None:
        pytest.skip("lrelease (Qt's translation compiler) is not installed")
    ts = meta.I18N / "rs_text_search_fr.ts"
    subprocess.run(["lrelease", "-silent", str(ts), "-qm", str(tmp_path / "rs_text_search_fr.qm")], check=True)
    settings = QgsSettings()
    settings.setValue("locale/userLocale", "fr_FR")
    original = meta.I18N
    meta.I18N = tmp_path
    try:
        plugin = rs_text_search.classFactory(iface)
        plugin.initGui()
        try:
            assert plugin.dock.indexButton.text() == "Indexer des couches…"
            assert [a.text() for a in plugin.actions][-1] == "Aide"
        finally:
            plugin.unload()
        assert meta.tr("Help") == "Help", "unloading removes the translator"
    finally:
        meta.I18N = original
        settings.remove("locale/userLocale")
        flush_deletes()


def test_long_messages_are_shown_whole(plugin, iface, qtbot):
    """A message bar entry's text browser is about two lines high; a longer sentence must not be cut."""
    from qgis.PyQt.QtWidgets import QTextBrowser

    text = ("'massachusetts_22978945_15' is indexed: 2400 tiles searchable, 120 empty tiles skipped (resumed after "
            "1200 tiles); 78 px tiles (1 m pixels, 78 m tiles), the ground the model's training images covered.")
    plugin.controller.message(text, seconds=0)
    item = iface.messageBar().currentItem()
    browser = item.findChild(QTextBrowser)
    qtbot.waitUntil(lambda: browser.isVisible() and browser.document().size().height() > 0, timeout=2000)
    qtbot.wait(50)
    assert item.text() == text
    assert browser.verticalScrollBar().maximum() == 0, "the text scrolls: part of it is hidden"
    assert browser.height() > 42, "taller than the two lines QGIS gives a message"
