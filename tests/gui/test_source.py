"""QgisRasterSource reads what the headless source reads, through QGIS data providers (files and XYZ)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtGui import QColor, QImage

from rs_text_search.core.tiling import Window, pixel_ground_m
from rs_text_search.gui.crs import qgis_transforms
from rs_text_search.gui.source import QgisRasterSource, layer_ground_m, lookup_identity

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
WINDOWS = [(0, 0, 64, 64, 64), (100, 50, 64, 64, 32), (300, 200, 128, 128, 32)]  # col, row, w, h, out size
# Shrinking reads agree where the file has no overviews: GDAL reads those from overviews, which
# have their own resampling; the plugin always averages full-resolution pixels.
NATIVE_ONLY = {"naip_m_4709963_se_14_1_20200831.tif"}
# rasterio is run in another process: inside QGIS's process the plugin never loads a second GDAL.
HEADLESS = """
import json, sys, numpy as np
from rs_text_search.core.sources import open_raster
from rs_text_search.core.tiling import Window, pixel_ground_m
path, windows, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
src = open_raster(path)
arrays = {}
for i, (c, r, w, h, s) in enumerate(windows):
    arrays[f"rgb{i}"], arrays[f"valid{i}"] = src.read_masked(Window(c, r, w, h), s)
lon, lat = src.to_wgs84(np.array([src.transform[0]]), np.array([src.transform[3]]))
np.savez(out, lonlat=np.array([lon[0], lat[0]]), **arrays)
ground = pixel_ground_m(src.transform, src.width, src.height, src.to_wgs84)
print(json.dumps({"identity": src.identity(), "ground_m": ground}))
"""


@pytest.mark.parametrize("scene", ["massachusetts_22978945_15.tif", "swellendam_3320D_2010_315_RGB_LATLNG.tif",
                                   "landsat_RGB.byte.tif", "naip_m_4709963_se_14_1_20200831.tif"])
def test_same_pixels_mask_and_identity_as_the_headless_source(qgis_app, scenes, scene, tmp_path):
    out = tmp_path / "headless.npz"
    windows = [w for w in WINDOWS if w[2] == w[4]] if scene in NATIVE_ONLY else WINDOWS
    run = subprocess.run([sys.executable, "-c", HEADLESS, str(scenes / scene), json.dumps(windows), str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    headless = json.loads(run.stdout)
    headless_identity = headless["identity"]
    reference = np.load(out)
    layer = QgsRasterLayer(str(scenes / scene), scene)
    source = QgisRasterSource(layer)
    assert source.identity() == headless_identity, "indexes are shared with the command line"
    assert lookup_identity(layer) == headless_identity
    for i, (col, row, width, height, size) in enumerate(windows):
        rgb, valid = source.clone().read_masked(Window(col, row, width, height), size)
        assert rgb.shape == (size, size, 3) and rgb.dtype == np.uint8
        difference = np.abs(rgb.astype(int) - reference[f"rgb{i}"])
        assert difference.max() <= 1, f"window {i}: pixels differ by up to {difference.max()}"
        np.testing.assert_array_equal(valid, reference[f"valid{i}"])
    lon, lat = source.to_wgs84(np.array([source.transform[0]]), np.array([source.transform[3]]))
    np.testing.assert_allclose([lon[0], lat[0]], reference["lonlat"], atol=1e-7)
    # The same pixel size, hence the same automatic tile size and index key, in QGIS and headless.
    assert pixel_ground_m(source.transform, source.width, source.height, source.to_wgs84) == pytest.approx(
        headless["ground_m"], rel=1e-6)
    assert layer_ground_m(layer) == pytest.approx(headless["ground_m"], rel=1e-6)


def test_alpha_and_nodata_make_the_valid_mask(qgis_app, scenes, tmp_path):
    from osgeo import gdal, osr

    landsat = QgisRasterSource(QgsRasterLayer(str(scenes / "landsat_RGB.byte.tif"), "landsat"))
    _, valid = landsat.read_masked(Window(0, 0, 64, 64))
    assert not valid.any(), "the corner of the Landsat scene is its nodata border"
    _, valid = landsat.read_masked(Window(300, 300, 64, 64), 32)
    assert valid.all()

    path = tmp_path / "rgba.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 4, gdal.GDT_Byte, ["ALPHA=YES"])
    dataset.SetGeoTransform((500000.0, 1.0, 0.0, 4000000.0, 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset.SetProjection(srs.ExportToWkt())
    pixels = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    alpha = np.zeros((64, 64), dtype=np.uint8)
    alpha[:, 16:] = 255  # a transparent strip on the left
    for band, values in enumerate([*pixels, alpha], start=1):
        dataset.GetRasterBand(band).WriteArray(values)
    dataset.GetRasterBand(4).SetColorInterpretation(gdal.GCI_AlphaBand)
    dataset = None
    source = QgisRasterSource(QgsRasterLayer(str(path), "rgba"))
    assert source.plan.alpha_band == 4 and source.plan.bands == (1, 2, 3)
    assert source.coverage() is None, "a provider offers no cheap coverage query: every tile is read"
    rgb, valid = source.read_masked(Window(0, 0, 64, 64))
    np.testing.assert_array_equal(valid, alpha > 0)
    np.testing.assert_array_equal(rgb, pixels.transpose(1, 2, 0))


@pytest.fixture(scope="module")
def xyz_tiles(tmp_path_factory) -> Path:
    """Zoom level 3 of a local XYZ tile set: each 256 px tile is one colour, (30x, 30y, 100)."""
    root = tmp_path_factory.mktemp("xyz")
    for x in range(8):
        for y in range(8):
            (root / "3" / str(x)).mkdir(parents=True, exist_ok=True)
            image = QImage(256, 256, QImage.Format_RGB32)
            image.fill(QColor(30 * x, 30 * y, 100))
            for i in range(0, 256, 16):  # some texture, so tiles are not "constant" (skipped) tiles
                image.setPixelColor(i, i, QColor(255, 255, 255))
            assert image.save(str(root / "3" / str(x) / f"{y}.png"))
    return root


def xyz_layer(root: Path) -> QgsRasterLayer:
    layer = QgsRasterLayer(f"type=xyz&url=file://{root}/{{z}}/{{x}}/{{y}}.png&zmin=3&zmax=3", "tiles", "wms")
    assert layer.isValid()
    return layer


def test_xyz_layer_is_read_at_the_requested_resolution(qgis_app, xyz_tiles):
    layer = xyz_layer(xyz_tiles)
    half = 20037508.342789244 / 2
    tile_m = 4 * half / 8  # one z3 tile
    source = QgisRasterSource(layer, QgsRectangle(-half, -half, 0, 0), tile_m / 256)
    assert (source.width, source.height) == (512, 512)
    identity = source.identity()
    assert identity["source"] == layer.source() and identity["width"] == 512
    assert identity["origin"] == [round(-half, 9), 0.0]
    rgb, valid = source.clone().read_masked(Window(0, 0, 256, 256), 32)  # tile x=2, y=4
    assert valid.all() and tuple(rgb[1, 0]) == (60, 120, 100)
    rgb, _ = source.read_masked(Window(256, 256, 256, 256), 32)  # tile x=3, y=5
    assert tuple(rgb[1, 0]) == (90, 150, 100)


def test_xyz_layer_indexed_over_the_map_extent_and_searched(plugin, iface, xyz_tiles, fresh_cache, qtbot,
                                                           wait_idle):
    layer = xyz_layer(xyz_tiles)
    QgsProject.instance().addMapLayer(layer)
    canvas = iface.mapCanvas()
    half = 20037508.342789244 / 2
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(QgsRectangle(-half, -half, 0, 0))
    plugin.controller.index_layers([layer])
    wait_idle(plugin.controller)
    assert plugin.dock.statusLabel.text() == "1 of 1 raster layer indexed"
    plugin.controller.search_text("blue water")
    wait_idle(plugin.controller)
    results = plugin.controller.results
    assert results and all(r.raster == layer.source() for r in results)
    assert not plugin.controller.thumbnails[results[0].tile_id].isNull(), "online layers get thumbnails too"
    viewed = canvas.extent()
    assert all(QgsRectangle(*r.bounds).intersects(viewed) for r in results)


def test_qgis_transforms_match_the_spherical_mercator_formula(qgis_app):
    transform_bounds, transform_point = qgis_transforms()
    x, y = transform_point(10.0, 45.0, "EPSG:4326", "EPSG:3857")
    radius = 6378137.0
    assert math.isclose(x, radius * math.radians(10.0), rel_tol=1e-9)
    assert math.isclose(y, radius * math.log(math.tan(math.pi / 4 + math.radians(45.0) / 2)), rel_tol=1e-9)
    minx, miny, maxx, maxy = transform_bounds((0.0, 0.0, 10.0, 45.0), "EPSG:4326", "EPSG:3857")
    assert minx == pytest.approx(0.0, abs=1e-6) and maxx == pytest.approx(x) and maxy == pytest.approx(y)
