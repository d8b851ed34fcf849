"""``qgis_process`` lists and runs the plugin's algorithms (issue 13, item 3).

QGIS's command line starts plugins through ``initProcessing()`` only. Each test points a fresh
QGIS profile (``HOME``) at this checkout through ``QGIS_PLUGINPATH``, enables the plugin with
``qgis_process plugins enable`` and runs the binary itself: Debian's ``qgis_process`` wrapper
script passes an option the binary rejects. ``qgis_process`` embeds QGIS's own Python; the run
test gives it this environment's packages through ``PYTHONPATH``, as an installed plugin gets
them from its dependency folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from .conftest import TEST_TILE_PX

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
SCENE = "massachusetts_22978945_15.tif"
ALGORITHMS = ("rs_text_search:find_similar_tiles", "rs_text_search:index_raster_layers",
              "rs_text_search:search_by_text")


@pytest.fixture
def qgis_process(tmp_path: Path):
    """``qgis_process(*args, with_packages=True)`` in a fresh profile with the plugin enabled."""
    if not Path(QGIS_PROCESS).is_file():
        pytest.skip("qgis_process is not installed (Debian package 'qgis')")
    plugin = tmp_path / "plugins" / "rs_text_search"
    plugin.mkdir(parents=True)
    for entry in [*(REPO / "rs_text_search").iterdir(), REPO / "metadata.txt", REPO / "icon.svg"]:
        if entry.name != "__pycache__":
            (plugin / entry.name).symlink_to(entry)
    base_env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen",
                "QGIS_PLUGINPATH": str(plugin.parent), "RS_TEXT_SEARCH_CACHE": str(tmp_path / "cache"),
                "PYTHONDONTWRITEBYTECODE": "1"}

    def run(*args: str, with_packages: bool = True) -> subprocess.CompletedProcess:
        env = dict(base_env, PYTHONPATH=sysconfig.get_paths()["purelib"]) if with_packages else base_env
        return subprocess.run([QGIS_PROCESS, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)

    enabled = run("plugins", "enable", "rs_text_search")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return run


def test_qgis_process_lists_the_algorithms(qgis_process):
    listed = qgis_process("list")
    assert listed.returncode == 0, listed.stderr
    assert "has no initProcessing() method" not in listed.stdout + listed.stderr
    for algorithm_id in ALGORITHMS:
        assert algorithm_id in listed.stdout, listed.stdout[-2000:] + listed.stderr


def test_qgis_process_indexes_and_searches_a_real_raster(qgis_process, scenes, tiny_model_dir, tmp_path):
    from osgeo import ogr

    scene, output = scenes / SCENE, tmp_path / "matches.gpkg"
    model = [f"MODEL={tiny_model_dir}", "DEVICE=2"]  # CPU
    indexed = qgis_process("run", "rs_text_search:index_raster_layers", "--", f"LAYERS={scene}",
                           f"TILE_SIZE={TEST_TILE_PX}", *model)
    assert indexed.returncode == 0, indexed.stdout + indexed.stderr
    assert "TILES:\t" in indexed.stdout and "Traceback" not in indexed.stderr
    found = qgis_process("run", "rs_text_search:search_by_text", "--", "QUERY=parking lot with cars",
                         f"LAYERS={scene}", "TOP_K=5", *model, f"OUTPUT={output}")
    assert found.returncode == 0, found.stdout + found.stderr
    assert "5 matching tiles." in found.stdout + found.stderr
    source = ogr.Open(str(output))  # kept: a layer outlives its data source only in a crash
    layer = source.GetLayer(0)
    assert layer.GetFeatureCount() == 5
    assert sorted(feature.GetField("rank") for feature in layer) == [1, 2, 3, 4, 5]
    layer = source = None


def test_qgis_process_without_the_packages_says_so_in_one_sentence(qgis_process, tmp_path):
    if os.environ.get("PYTHONPATH") or subprocess.run(
            ["/usr/bin/python3", "-I", "-c", "import onnxruntime, faiss"], capture_output=True).returncode == 0:
        pytest.skip("QGIS's own Python has the packages here: not a stock QGIS")
    run = qgis_process("run", "rs_text_search:search_by_text", "--", "QUERY=houses",
                       f"OUTPUT={tmp_path / 'none.gpkg'}", with_packages=False)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "are missing from QGIS's Python" in text and "Traceback" not in text and "ModuleNotFoundError" not in text
