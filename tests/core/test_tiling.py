import pytest

from rs_text_search.core.tiling import GridSpec, Window, grid_axis, pixel_at, tile_grid, window_bounds


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
