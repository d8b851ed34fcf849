import numpy as np
import pytest

from rs_text_search.core.errors import RasterError
from rs_text_search.core.sources import RasterSource, open_raster
from rs_text_search.core.tiling import Window
from tests.core.conftest import textured_rgb, write_geotiff


def test_rgb_window_and_resampling(rgb_tif):
    with open_raster(rgb_tif) as src:
        assert isinstance(src, RasterSource)
        assert (src.width, src.height) == (130, 100)
        assert src.transform[1] == 1.0 and src.crs_wkt
        rgb, valid = src.read_masked(Window(10, 20, 40, 40))
        assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8 and valid.all()
        expected = textured_rgb(100, 130)[:, 20:60, 10:50].transpose(1, 2, 0)
        np.testing.assert_array_equal(rgb, expected)
        small = src.read(Window(10, 20, 40, 40), out_size=20)
        assert small.shape == (20, 20, 3)
        lon, lat = src.to_wgs84(np.array([500000.0]), np.array([4000000.0]))
        assert lon[0] == pytest.approx(15.0, abs=1e-6) and 36 < lat[0] < 36.2  # UTM 33N central meridian


def test_grey_is_repeated_and_16bit_is_stretched(tmp_path):
    data = (np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64) * 7)
    with open_raster(write_geotiff(tmp_path / "u16.tif", data)) as src:
        rgb = src.read(Window(0, 0, 64, 64))
    assert rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb.min() == 0 and rgb.max() == 255  # 2-98 percentile stretch saturates the tails


def test_palette_is_expanded(tmp_path):
    import rasterio

    data = np.zeros((1, 16, 16), np.uint8)
    data[0, :, 8:] = 1
    path = write_geotiff(tmp_path / "pal.tif", data, photometric="palette")
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 0, 255, 255)})
    with open_raster(path) as src:
        rgb = src.read(Window(0, 0, 16, 16))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[0, 15]) == (0, 0, 255)


def test_four_band_uses_rgb_and_alpha_masks(tmp_path):
    rgb = textured_rgb(32, 32)
    alpha = np.full((1, 32, 32), 255, np.uint8)
    alpha[:, :, :16] = 0
    from rasterio.enums import ColorInterp

    path = write_geotiff(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]))
    import rasterio

    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with open_raster(path) as src:
        pixels, valid = src.read_masked(Window(0, 0, 32, 32))
    assert not valid[:, :16].any() and valid[:, 16:].all()
    np.testing.assert_array_equal(pixels[:, 16:], rgb.transpose(1, 2, 0)[:, 16:])


def test_nir_band_choice_and_nodata(tmp_path):
    data = np.stack([np.full((16, 16), v, np.uint8) for v in (10, 20, 30, 40)])
    data[:, 0, 0] = 0
    path = write_geotiff(tmp_path / "naip.tif", data, nodata=0)
    with open_raster(path) as src:
        pixels, valid = src.read_masked(Window(0, 0, 16, 16))
        assert tuple(pixels[5, 5]) == (10, 20, 30)
        assert not valid[0, 0] and valid[1, 1]
    with open_raster(path, bands=(4, 3, 2)) as src:
        assert tuple(src.read(Window(0, 0, 4, 4))[2, 2]) == (40, 30, 20)


@pytest.mark.parametrize("bands", [(5, 1, 2), (1, 2)])
def test_bad_band_choice_is_one_sentence(rgb_tif, bands):
    with pytest.raises(RasterError, match="cannot be used"):
        open_raster(rgb_tif, bands=bands)


def test_two_band_without_alpha_is_refused(tmp_path):
    path = write_geotiff(tmp_path / "two.tif", np.zeros((2, 8, 8), np.uint8) + 3)
    with pytest.raises(RasterError, match="two bands"):
        open_raster(path)


def test_not_a_raster_and_missing_file(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("this is not a GeoTIFF")
    with pytest.raises(RasterError, match="not a raster"):
        open_raster(text)
    with pytest.raises(RasterError, match="does not exist"):
        open_raster(tmp_path / "missing.tif")


def test_no_crs_means_pixel_coordinates(tmp_path):
    path = write_geotiff(tmp_path / "plain.tif", textured_rgb(20, 20), crs=None)
    with open_raster(path) as src:
        assert src.crs_wkt is None and src.to_wgs84(np.zeros(1), np.zeros(1)) is None
        assert src.transform == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_every_shared_scene_opens(scenes_dir):
    for path in sorted(scenes_dir.glob("*.tif")):
        with open_raster(path) as src:
            rgb, valid = src.read_masked(Window(0, 0, 64, 64), out_size=32)
            assert rgb.shape == (32, 32, 3), path.name
            assert src.crs_wkt, path.name


_CACHE_PROBE = """
import sys
from rasterio.env import get_gdal_config
from rs_text_search.core.sources import open_raster
print(0, get_gdal_config("GDAL_CACHEMAX"))  # GDAL's own limit in bytes (5 % of RAM), before any raster
for path in sys.argv[1:]:
    with open_raster(path) as src:
        print(src.block_cache_mb, get_gdal_config("GDAL_CACHEMAX"))
"""


def _probe_block_cache(tmp_path, *paths, **env):
    """Each raster's (block_cache_mb, GDAL's cache limit) when opened in that order by a fresh process
    (GDAL's block cache limit is process-wide, so it is not probed in the test process)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    child_env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    child_env.update(env, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, "-c", _CACHE_PROBE, *map(str, paths)], env=child_env,
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    return [tuple(int(v) for v in line.split()) for line in done.stdout.splitlines()]


def test_block_cache_holds_two_block_rows_and_leaves_a_users_setting_alone(tmp_path):
    small = write_geotiff(tmp_path / "small.tif", textured_rgb(64, 64), tiled=True, blockxsize=32, blockysize=32)
    # 2 rows of 512-pixel blocks, 3 bands, 30,000 pixels wide: 88 MiB, more than the 64 MB floor.
    wide = write_geotiff(tmp_path / "wide.tif", np.zeros((3, 512, 30000), np.uint8) + 7, tiled=True,
                         blockxsize=512, blockysize=512, compress="deflate")
    (_, gdal_bytes), *lines = _probe_block_cache(tmp_path, small, wide, small)
    gdal_mb = gdal_bytes // 2**20  # never above GDAL's own limit (a machine with little RAM has less)
    assert lines[0] == (min(64, gdal_mb),) * 2
    assert lines[1] == (min(88, gdal_mb),) * 2
    assert lines[2] == lines[1]  # never lowered below what an earlier raster needed
    assert _probe_block_cache(tmp_path, wide, GDAL_CACHEMAX="300")[1] == (0, 300 * 2**20)
