"""Fixtures for the plugin tests: one real QgsApplication (offscreen) and a real-widget iface.

``FakeIface`` (``qgis_fakes.py``, importable without pytest) implements the part of
``QgisInterface`` the plugin uses with real widgets.

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

from qgis.core import QgsApplication, QgsProject, QgsSettings  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication, QSettings  # noqa: E402

from .qgis_fakes import FakeIface, flush_deletes  # noqa: E402

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
