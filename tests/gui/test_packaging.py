"""metadata.txt is complete, `make package` builds a zip QGIS's plugin loader accepts, and the
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
                     "rs_text_search/gui/plugin.py", "rs_text_search/core/model.py",
                     "rs_text_search/resources/models/"):
        assert expected in names, expected
    assert not [n for n in names if "/tests/" in n or "/training/" in n or "__pycache__" in n or n.endswith(".pyc")]

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
    )
    checked = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().splitlines()[-1] == "RS Text Search"


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
