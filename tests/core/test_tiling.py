import math

import numpy as np
import pytest

from rs_text_search.core.tiling import (
    GridSpec,
    Window,
    grid_axis,
    matched_tile_px,
    pixel_at,
    pixel_ground_m,
    tile_grid,
    window_bounds,
)


def test_axis_covers_every_pixel_with_full_tiles():
    assert grid_axis(500, 224, 224) == [(0, 224), (224, 224), (276, 224)]
    assert grid_axis(448, 224, 224) == [(0, 224), (224, 224)]
    assert grid_axis(100, 224, 224) == [(0, 100)]
    assert grid_axis(0, 224, 224) == []


def test_overlap_halves_the_stride():
    grid = GridSpec(tile_size_px=100, overlap=0.5)
    assert grid.stride_px == 50
    assert [o for o, _ in grid_axis(300, 100, grid.stride_px)] == [0, 50, 100, 150, 200]


@pytest.mark.parametrize("bad", [dict(tile_size_px=4), dict(overlap=1.0), dict(overlap=-0.1)])
def test_bad_grids_are_refused(bad):
    with pytest.raises(ValueError):
        GridSpec(**bad)


def test_tiles_are_row_major_with_stable_indexes():
    n_rows, n_cols, tiles = tile_grid(300, 250, GridSpec(100))
    assert (n_rows, n_cols) == (3, 3)
    assert [t.index for t in tiles] == list(range(9))
    assert tiles[5].row == 1 and tiles[5].col == 2
    assert tiles[5].window == Window(200, 100, 100, 100)
    assert tiles[8].window == Window(200, 150, 100, 100)  # last row moved up to end on the edge


def test_bounds_follow_the_geotransform_and_invert():
    transform = (1000.0, 2.0, 0.0, 5000.0, 0.0, -2.0)  # 2 m pixels, north up
    assert window_bounds(transform, Window(10, 20, 5, 5)) == (1020.0, 4950.0, 1030.0, 4960.0)
    assert pixel_at(transform, 1021.0, 4959.0) == (10.5, 20.5)


def test_rotated_transform_bounds_enclose_all_corners():
    transform = (0.0, 1.0, 0.5, 0.0, 0.5, -1.0)
    minx, miny, maxx, maxy = window_bounds(transform, Window(0, 0, 10, 10))
    assert (minx, maxx) == (0.0, 15.0) and (miny, maxy) == (-10.0, 5.0)


def _lonlat(crs: str):
    from pyproj import Transformer

    transformer = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return lambda xs, ys: transformer.transform(np.asarray(xs, float), np.asarray(ys, float))


def test_pixel_ground_size_in_metres_for_projected_and_geographic_crs():
    # Measured on a sphere, with the projection's local scale: within 1 %, far below what matters for a tile.
    utm_1m = (500000.0, 1.0, 0.0, 4000000.0, 0.0, -1.0)  # at UTM 33N's central meridian: scale 0.9996
    assert pixel_ground_m(utm_1m, 200, 200, _lonlat("EPSG:32633")) == pytest.approx(1 / 0.9996, rel=3e-3)
    feet = (700000.0, 2.0, 0.0, 900000.0, 0.0, -2.0)  # Massachusetts state plane in US feet: 2 ft pixels
    assert pixel_ground_m(feet, 100, 100, _lonlat("EPSG:2249")) == pytest.approx(0.6096, rel=1e-2)
    # 0.0001 degree pixels at 60 N: 5.57 m east-west, 11.1 m north-south; their mean
    degrees = (10.0, 0.0001, 0.0, 60.0, 0.0, -0.0001)
    expected = (0.0001 * math.pi / 180 * 6371008.8) * (1 + math.cos(math.radians(60.0))) / 2
    assert pixel_ground_m(degrees, 2, 2, _lonlat("EPSG:4326")) == pytest.approx(expected, rel=1e-3)
    assert pixel_ground_m(utm_1m, 10, 10, lambda xs, ys: None) is None


@pytest.mark.parametrize("raster_m, expected", [
    (0.6096, (128, False)),  # the training resolution: one raster pixel per model pixel
    (1.0, (78, False)),      # a 1 m orthophoto: 78 m tiles, as UCM's 256 x 0.3048 m images
    (0.3048, (256, False)),
    (300.0, (16, True)),     # Landsat: far coarser; the smallest tile (8x upsampling)
    (6.0, (16, True)),       # 6 m: 13 px would cover 78 m; the floor is 1/8 of the input
    (4.0, (20, False)),
    (0.01, (1024, True)),    # drone imagery: the largest tile (8x the input)
])
def test_tiles_cover_the_ground_of_a_training_image(raster_m, expected):
    assert matched_tile_px(128, 0.6096, raster_m) == expected


def test_windows_bounds_gives_the_same_floats_as_window_bounds_one_by_one():
    from rs_text_search.core.tiling import windows_bounds

    rng = np.random.default_rng(3)
    boxes = np.column_stack([rng.integers(0, 100_000, 500), rng.integers(0, 100_000, 500),
                             rng.integers(1, 1_000, 500), rng.integers(1, 1_000, 500)])
    for transform in [(500_000.0, 0.3, 0.0, 4_000_000.0, 0.0, -0.3),  # north up
                      (-71.1, 1e-5 / 3, 2e-6, 42.3, 1.7e-6, -1e-5 / 3),  # rotated, degrees
                      (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)]:  # pixel coordinates
        expected = [window_bounds(transform, Window(*map(int, box))) for box in boxes]
        assert windows_bounds(transform, boxes).tolist() == [list(b) for b in expected]
