"""Tiles in regions without a valid pixel are marked nodata without being read (``RasterSource.coverage``)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from rs_text_search.core.errors import Cancelled, RasterError
from rs_text_search.core.indexing import build_index
from rs_text_search.core.sources import RasterioSource, open_raster
from rs_text_search.core.tiling import Coverage, GridSpec, Window, certainly_empty, tile_grid
from tests.core.conftest import BLOCK_PX, SIDE_PX, write_sparse


@pytest.fixture
def reads(monkeypatch) -> list[Window]:
    """Every window any RasterioSource (clones included) reads."""
    seen: list[Window] = []
    real = RasterioSource.read_masked

    def recording(self, window, out_size=None):
        seen.append(window)
        return real(self, window, out_size)

    monkeypatch.setattr(RasterioSource, "read_masked", recording)
    return seen


def catalog(index) -> list[tuple]:
    with sqlite3.connect(index.directory / "catalog.sqlite") as db:
        return db.execute("SELECT * FROM tiles ORDER BY id").fetchall()


def test_certainly_empty_keeps_every_window_touching_a_cell_that_may_be_valid():
    cells = np.zeros((3, 4), bool)
    cells[1, 2] = True  # pixels x 20-29, y 10-19 may be valid
    coverage = Coverage(10, 10, cells)
    windows = [Window(0, 0, 20, 10), Window(19, 9, 2, 2), Window(29, 19, 1, 1), Window(30, 20, 10, 10),
               Window(0, 20, 20, 10), Window(35, 25, 10, 10), Window(0, 0, 40, 30)]
    assert certainly_empty(coverage, windows).tolist() == [True, False, False, True, True, False, False]
    assert certainly_empty(coverage, []).tolist() == []


def test_coverage_is_the_blocks_a_sparse_geotiff_wrote(tmp_path):
    path, _ = write_sparse(tmp_path / "sparse.tif")
    with open_raster(path) as source:
        coverage = source.coverage()
    assert (coverage.cell_width_px, coverage.cell_height_px) == (BLOCK_PX, BLOCK_PX)
    assert coverage.maybe_valid.shape == (6, 6)
    assert sorted(zip(*np.nonzero(coverage.maybe_valid))) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (5, 5)]
    rgba, _ = write_sparse(tmp_path / "rgba.tif", count=4, nodata=None, alpha=True)
    with open_raster(rgba) as source:
        assert source.coverage().maybe_valid.sum() == 6, "unwritten alpha blocks read as 0: transparent"
    no_mask, _ = write_sparse(tmp_path / "no-nodata.tif", nodata=None)
    with open_raster(no_mask) as source:
        assert source.coverage() is None, "without a mask an unwritten block is black pixels, not nodata"


@pytest.mark.parametrize("tile_px, overlap", [(100, 0.0), (64, 0.5)])
def test_skipping_never_drops_a_tile_with_data_and_equals_reading_every_tile(tmp_path, cache, tiny_model, reads,
                                                                             monkeypatch, tile_px, overlap):
    path, full = write_sparse(tmp_path / "islands.tif")
    grid = GridSpec(tile_px, overlap)
    _, _, tiles = tile_grid(SIDE_PX, SIDE_PX, grid)
    with open_raster(path) as source:
        index, stats = build_index(source, tiny_model, grid, root=tmp_path / "skipping")
    read = set(reads)
    with_data = {t.window for t in tiles if full[:, t.window.row_off : t.window.row_off + t.window.height,
                                                 t.window.col_off : t.window.col_off + t.window.width].any()}
    assert with_data <= read, "a tile with a valid pixel was never read"
    assert stats.tiles_not_read == len(tiles) - len(read) > len(tiles) / 2
    assert len(read) == len(reads), "no tile is read twice"

    monkeypatch.setattr(RasterioSource, "coverage", lambda self: None)  # the path that reads every tile
    with open_raster(path) as source:
        reference, reference_stats = build_index(source, tiny_model, grid, root=tmp_path / "reading")
    assert reference_stats.tiles_not_read == 0
    assert (stats.tiles_embedded, stats.tiles_skipped_nodata, stats.tiles_skipped_constant) == (
        reference_stats.tiles_embedded, reference_stats.tiles_skipped_nodata, reference_stats.tiles_skipped_constant)
    assert index.meta["counts"] == reference.meta["counts"]
    got, expected = catalog(index), catalog(reference)
    assert [row[:-1] for row in got] == [row[:-1] for row in expected], "same windows, bounds, corners, status"
    for mine, theirs in zip(got, expected):
        if mine[-1] is not None:
            np.testing.assert_allclose(np.frombuffer(mine[-1], np.float32), np.frombuffer(theirs[-1], np.float32),
                                       atol=1e-5)
    assert index.problem(deep=True, thorough=True) is None


def test_an_all_nodata_raster_ends_without_reading_a_tile(tmp_path, cache, tiny_model, reads):
    path, _ = write_sparse(tmp_path / "empty.tif", islands=[], side=20_000)
    assert path.stat().st_size < 2**20, "sparse: no block is written"
    with open_raster(path) as source, pytest.raises(RasterError, match="^'empty' has no tile with image content "
                                                                       r"\(all nodata, transparent or constant\)\.$"):
        build_index(source, tiny_model, GridSpec(250))
    assert reads == []
    assert not any((cache / "indexes").iterdir())


def test_cancelling_while_marking_keeps_what_was_written_and_resumes(tmp_path, cache, tiny_model, reads, monkeypatch):
    import rs_text_search.core.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMPTY_BATCH_TILES", 50)
    path, _ = write_sparse(tmp_path / "islands.tif")
    checks = iter([False, False, True])  # before each batch of 50 unread tiles
    with open_raster(path) as source, pytest.raises(Cancelled, match="100 of 225 tiles are kept"):
        build_index(source, tiny_model, GridSpec(100), is_cancelled=lambda: next(checks, True))
    assert reads == []
    with open_raster(path) as source:
        index, stats = build_index(source, tiny_model, GridSpec(100))
    assert stats.tiles_done_before == 100 and stats.tiles_not_read + 100 + len(reads) == 225
    assert sum(index.meta["counts"].values()) == 225 and index.problem(deep=True, thorough=True) is None
