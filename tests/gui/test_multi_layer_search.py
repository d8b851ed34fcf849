"""Issue 11 in the plugin: a search over several layers runs on one merged vector index (the engine's
``Searcher`` merges whenever it searches more than one index), and finds what the command line finds.

The rasters are written with QGIS's own GDAL and the command line runs in its own process: rasterio
(the command line's GDAL and PROJ) must not be loaded into the QGIS process, whose CRS lookups it
would change for the tests that follow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import TEST_TILE_PX

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]


def write_tiles(path: Path, seeds: list[list[int]], x0: float) -> Path:
    """A UTM 33N GeoTIFF of TEST_TILE_PX squares of random pixels, one seed each (equal seeds: equal tiles)."""
    from osgeo import gdal, osr

    blocks = [np.concatenate([np.random.default_rng(s).integers(0, 256, (3, TEST_TILE_PX, TEST_TILE_PX), np.uint8)
                              for s in row], axis=2) for row in seeds]
    pixels = np.ascontiguousarray(np.concatenate(blocks, axis=1))
    bands, height, width = pixels.shape
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, bands, gdal.GDT_Byte)
    dataset.SetGeoTransform((x0, 1.0, 0.0, 4000000.0, 0.0, -1.0))
    crs = osr.SpatialReference()
    crs.ImportFromEPSG(32633)
    dataset.SetProjection(crs.ExportToWkt())
    dataset.WriteRaster(0, 0, width, height, pixels.tobytes(), band_list=[1, 2, 3])
    dataset = None
    return path


def test_several_layers_are_searched_as_one_index_like_the_command_line(plugin, iface, fresh_cache, wait_idle,
                                                                       tmp_path, tiny_model_dir):
    grids = ([[1, 2], [3, 4]], [[5, 6], [7, 1]], [[8, 9], [10, 11]])
    layers = [iface.add_raster(write_tiles(tmp_path / f"part{n}.tif", grid, 500000.0 + 1000 * n))
              for n, grid in enumerate(grids)]
    iface.mapCanvas().setExtent(layers[0].extent())
    controller = plugin.controller
    controller.index_layers(layers)
    wait_idle(controller)
    assert len(list(fresh_cache.glob("indexes/*/meta.json"))) == 3

    task = controller.search_text("farmland")
    wait_idle(controller)
    assert task.succeeded and len(task.indexes) == 3
    (merged,) = fresh_cache.glob("merged/*/members.json")  # one vector index for the three layers
    assert len(json.loads(merged.read_text())["members"]) == 3
    plugin_results = [(r.tile_id, round(r.score, 5)) for r in controller.results]
    assert len(plugin_results) == 10 and {r.raster_name for r in controller.results} == {"part0", "part1", "part2"}

    cli = subprocess.run([sys.executable, "-m", "rs_text_search", "search", "farmland", "--top-k", "10", "--json",
                          "--model", str(tiny_model_dir), "--provider", "cpu"], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "RS_TEXT_SEARCH_CACHE": str(fresh_cache)})
    assert cli.returncode == 0, cli.stderr
    assert [(r["tile_id"], round(r["score"], 5)) for r in json.loads(cli.stdout)] == plugin_results
    assert len(list(fresh_cache.glob("merged/*/members.json"))) == 1  # the command line reused the same one
