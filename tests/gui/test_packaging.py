"""metadata.txt is complete, `make package` builds a zip QGIS's plugin loader accepts (without the
model, which `make model-zip` ships apart and the plugin finds once its folder is chosen), and the
plugin never brings a second GDAL/PROJ (rasterio, pyproj, pyogrio, shapely) into QGIS."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "tracker",
            "repository", "tags", "category", "icon", "experimental", "hasProcessingProvider", "license")


def test_metadata_is_complete_and_read_once():
    from rs_text_search.gui.meta import icon_path, metadata

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    missing = [key for key in REQUIRED if not general.get(key, "").strip()]
    assert not missing, f"metadata.txt lacks {missing}"
    assert general["qgisMinimumVersion"] == "3.22" and general["hasProcessingProvider"] == "yes"
    # QGIS 4 (Qt6) is offered the plugin only once supportsQt6 is declared after a check on Qt6.
    assert general["qgisMaximumVersion"] == "3.99" and "supportsQt6" not in general
    assert not general["email"].endswith(".example") and general["license"] == "GPL-2.0-or-later"
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO / "LICENSE").read_text(encoding="utf-8")
    assert (REPO / general["icon"]).is_file()
    assert metadata()["name"] == general["name"] and Path(icon_path()).name == general["icon"]


@pytest.mark.skipif(shutil.which("zip") is None, reason="the zip command is not installed")
def test_make_package_builds_an_installable_zip(tmp_path):
    run = subprocess.run(["make", "-s", "package", f"PACKAGE_BUILD={tmp_path / 'build'}",
                          f"DIST={tmp_path / 'dist'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    [archive] = list((tmp_path / "dist").glob("rs_text_search-*.zip"))
    names = zipfile.ZipFile(archive).namelist()
    assert all(name.startswith("rs_text_search/") for name in names)
    for expected in ("rs_text_search/__init__.py", "rs_text_search/metadata.txt", "rs_text_search/icon.svg",
                     "rs_text_search/LICENSE", "rs_text_search/gui/plugin.py", "rs_text_search/core/model.py"):
        assert expected in names, expected
    assert not [n for n in names if "/tests/" in n or "/training/" in n or "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "/resources/" in n or n.endswith((".onnx", "cli.py", "__main__.py", "demo.py"))]
    assert archive.stat().st_size < 1_000_000, "the plugin alone is code: the model is a separate download"
    if shutil.which("lrelease"):
        assert "rs_text_search/i18n/rs_text_search_fr.qm" in names

    plugins = tmp_path / "plugins"
    zipfile.ZipFile(archive).extractall(plugins)
    loader = (
        "import os, sys\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "import qgis.utils as utils\n"
        f"utils.plugin_paths = [{str(plugins)!r}]\n"
        f"sys.path.insert(0, {str(plugins)!r})\n"
        "utils.updateAvailablePlugins()\n"
        "assert 'rs_text_search' in utils.available_plugins, utils.available_plugins\n"
        "assert utils.loadPlugin('rs_text_search')\n"
        "module = sys.modules['rs_text_search']\n"
        f"assert module.__file__.startswith({str(plugins)!r}), module.__file__\n"
        "print(utils.pluginMetadata('rs_text_search', 'name'))\n"
        "from rs_text_search.core.errors import ModelError\n"
        "from rs_text_search.gui.engine import Engine\n"
        "from rs_text_search.gui.settings import PluginSettings\n"
        "try:\n"
        "    Engine().model_info(PluginSettings())\n"
        "except ModelError as exc:\n"
        "    print(exc)\n"
    )
    checked = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    name, no_model = checked.stdout.strip().splitlines()[-2:]
    assert name == "RS Text Search"
    assert no_model.startswith("No model is installed yet; unzip the model download"), no_model


@pytest.mark.skipif(shutil.which("zip") is None, reason="the zip command is not installed")
def test_make_model_zip_is_found_once_its_folder_is_chosen(qgis_app, tmp_path):
    from rs_text_search.gui.engine import Engine
    from rs_text_search.gui.settings import PluginSettings

    if not (REPO / "resources" / "models" / "rs-default" / "manifest.json").is_file():
        pytest.skip("no bundled model in resources/models/rs-default")
    run = subprocess.run(["make", "-s", "model-zip", f"DIST={tmp_path / 'dist'}"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    [archive] = list((tmp_path / "dist").glob("rs_text_search-model-rs-default-*.zip"))
    names = zipfile.ZipFile(archive).namelist()
    assert "rs-default/manifest.json" in names and all(n.startswith("rs-default/") for n in names)
    chosen = tmp_path / "my models"
    zipfile.ZipFile(archive).extractall(chosen)
    # The folder the analyst unzipped into, or the model folder itself: both work.
    for folder in (chosen, chosen / "rs-default"):
        info = Engine().model_info(PluginSettings(model_dir=str(folder)))
        assert info.name == "rs-default" and info.directory == (chosen / "rs-default").resolve()


def test_translation_files_hold_every_tr_text():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "update_translations.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_the_plugin_never_loads_a_second_gdal_or_proj(scenes):
    script = (
        "import os, sys\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from qgis.core import QgsApplication, QgsRasterLayer\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "import rs_text_search.gui.plugin, rs_text_search.gui.processing.algorithms\n"
        "from rs_text_search.gui.crs import qgis_transforms\n"
        "from rs_text_search.gui.source import QgisRasterSource\n"
        "from rs_text_search.core.tiling import Window\n"
        f"layer = QgsRasterLayer({str(scenes / 'landsat_RGB.byte.tif')!r}, 'l')\n"
        "source = QgisRasterSource(layer)\n"
        "source.clone().read_masked(Window(0, 0, 64, 64), 32)\n"
        "source.to_wgs84([source.transform[0]], [source.transform[3]])\n"
        "qgis_transforms()[0]((0, 0, 1, 1), 'EPSG:4326', 'EPSG:3857')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rasterio', 'pyproj', 'pyogrio', 'shapely',"
        " 'fiona', 'geopandas'))\n"
        "print(bad)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
