"""Fixtures for the plugin tests: one real QgsApplication (offscreen) and a real-widget iface.

``qgis.testing.mocked.get_iface`` needs the ``mock`` package and gives a Mock, so instead
``FakeIface`` implements the part of ``QgisInterface`` the plugin uses with real objects: a
QMainWindow with a Raster menu and toolbar, a QgsMapCanvas kept in sync with the project's layer
tree, a layer tree view and a QgsMessageBar. Calling anything else raises AttributeError.

QGIS settings go to a temporary folder (QSettings ini files), never to the developer's profile;
indexes go to a temporary cache through ``RS_TEXT_SEARCH_CACHE``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("qgis.core", reason="QGIS's Python bindings (python3-qgis) are not installed")

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings  # noqa: E402
from qgis.gui import (  # noqa: E402
    QgsLayerTreeMapCanvasBridge,
    QgsLayerTreeView,
    QgsMapCanvas,
    QgsMessageBar,
)
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QSettings, Qt  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402
from qgis.PyQt.QtWidgets import QDockWidget, QMainWindow, QMenu, QVBoxLayout, QWidget  # noqa: E402

SCENES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scenes"
TEST_TILE_PX = 64  # tiles of 64 raster pixels, read at the tiny model's 32 px: a few hundred per scene


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory: pytest.TempPathFactory):
    """The one QgsApplication of the session, with Processing initialised."""
    config = tmp_path_factory.mktemp("qgis_profile")
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(config)
    QSettings.setDefaultFormat(QSettings.IniFormat)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(config))
    app = QgsApplication.instance()
    if app is None:
        app = QgsApplication([b"rs_text_search_tests"], True)
        app.initQgis()
    QCoreApplication.setOrganizationName("rs_text_search_tests")
    QCoreApplication.setApplicationName("rs_text_search_tests")
    plugins = str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins")
    if plugins not in sys.path:
        sys.path.append(plugins)
    from processing.core.Processing import Processing

    Processing.initialize()
    yield app
    # QGIS keeps coordinate transforms in a static cache; left for the C++ exit handlers, their
    # destructors call into PROJ after PROJ is gone and the interpreter dies with SIGSEGV after
    # every test passed. exitQgis() empties the caches while everything is still alive.
    QgsProject.instance().clear()
    flush_deletes()
    app.exitQgis()


@pytest.fixture(scope="session")
def qapp(qgis_app):
    """pytest-qt's application is the QgsApplication."""
    return qgis_app


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
        from qgis.core import QgsLayerTreeModel

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


@pytest.fixture
def iface(qgis_app, qtbot):
    QgsProject.instance().clear()
    fake = FakeIface()
    fake.window.show()
    yield fake
    QgsProject.instance().clear()
    fake.close()
    flush_deletes()


@pytest.fixture(scope="session")
def scenes() -> Path:
    if not SCENES.is_dir():
        pytest.skip(f"real scenes not found at {SCENES} (CI clones the repo with ../shared beside it)")
    return SCENES


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One index cache for the session: scenes indexed by one test are reused at once by the next."""
    return tmp_path_factory.mktemp("rs_cache")


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> Path:
    monkeypatch.setenv("RS_TEXT_SEARCH_CACHE", str(shared_cache))
    return shared_cache


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("RS_TEXT_SEARCH_CACHE", str(folder))
    return folder


@pytest.fixture
def plugin_settings(qgis_app, tiny_model_dir: Path):
    """Plugin settings pointing at the tiny model, 64 px tiles; restored to absent afterwards."""
    from rs_text_search.gui.settings import GROUP, PluginSettings

    settings = QgsSettings()
    settings.remove(GROUP)
    PluginSettings(model_dir=str(tiny_model_dir), provider="cpu", tile_size_px=TEST_TILE_PX, top_k=10).save()
    yield
    QgsSettings().remove(GROUP)


@pytest.fixture
def plugin(iface, plugin_settings, cache):
    """The plugin loaded through classFactory, with its GUI; unloaded afterwards."""
    import rs_text_search

    loaded = rs_text_search.classFactory(iface)
    loaded.initGui()
    yield loaded
    if loaded.controller is not None:
        loaded.unload()
    flush_deletes()


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest):
    """Fail a test that logs an error from the plugin, unless it asked for ``allow_error_logs``."""
    caplog.set_level(logging.INFO, logger="rs_text_search")
    yield
    if "allow_error_logs" in request.fixturenames:
        return
    errors = [r for r in caplog.records if r.name.startswith("rs_text_search") and r.levelno >= logging.ERROR]
    assert not errors, "the plugin logged errors: " + "; ".join(r.getMessage() for r in errors)


@pytest.fixture
def allow_error_logs() -> None:
    """Marker fixture: this test expects the plugin to log errors."""


@pytest.fixture
def wait_idle(qtbot):
    """``wait_idle(controller)``: wait until the controller has no indexing or search task left."""

    def wait(controller, timeout_ms: int = 60_000) -> None:
        qtbot.waitUntil(lambda: controller.index_task is None and controller.search_task is None,
                        timeout=timeout_ms)

    return wait
