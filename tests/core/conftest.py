"""Fixtures for the engine tests: small real GeoTIFFs written with rasterio from a fixed seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SCENES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scenes"


def write_geotiff(path: Path, data: np.ndarray, crs: str | None = "EPSG:32633", nodata=None,
                  origin=(500000.0, 4000000.0), pixel_m: float = 1.0, **profile) -> Path:
    """Write [bands, H, W] to a tiled GeoTIFF (north-up, pixel_m metres per pixel)."""
    import rasterio
    from rasterio.transform import from_origin

    bands, height, width = data.shape
    meta = dict(driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype, nodata=nodata,
                crs=crs, transform=from_origin(*origin, pixel_m, pixel_m) if crs else None)
    meta.update(profile)
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(data)
    return path


def textured_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """[3, H, W] uint8 with smooth structure plus noise (not constant anywhere)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 3) % 256, (yy * 2) % 256, ((xx + yy) * 5) % 256]).astype(np.int16)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


BLOCK_PX = 256
# (col, row, width, height) of the data written into an otherwise unwritten raster: a block-straddling
# patch, a single pixel on a block's last column, a patch in the last (partial) block row and column.
ISLANDS = [(230, 250, 60, 40), (BLOCK_PX * 3 - 1, 700, 1, 1), (1480, 1480, 20, 20)]
SIDE_PX = 1500  # not a multiple of the block size: the last block row and column are partial


def write_sparse(path, islands=ISLANDS, side=SIDE_PX, count=3, nodata=0, alpha=False):
    """A sparse tiled GeoTIFF (SPARSE_OK: unwritten blocks take no space and read as nodata) holding data
    only in ``islands``; returns the path and the full pixel array it reads as."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin
    from rasterio.windows import Window as RioWindow

    full = np.zeros((count, side, side), np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=count, dtype="uint8",
                       nodata=nodata, crs="EPSG:32633", transform=from_origin(500000.0, 4000000.0, 1.0, 1.0),
                       tiled=True, blockxsize=BLOCK_PX, blockysize=BLOCK_PX, SPARSE_OK=True) as dst:
        if alpha:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        for n, (col, row, width, height) in enumerate(islands):
            patch = textured_rgb(height, width, seed=n)
            if alpha:
                patch = np.concatenate([patch, np.full((1, height, width), 255, np.uint8)])
            patch[:, 0, 0] = 255  # never nodata, even where the texture is 0
            full[:, row : row + height, col : col + width] = patch
            dst.write(patch, window=RioWindow(col, row, width, height))
    return path, full


@pytest.fixture
def rgb_tif(tmp_path) -> Path:
    return write_geotiff(tmp_path / "rgb.tif", textured_rgb(100, 130))


@pytest.fixture
def scenes_dir() -> Path:
    if not SCENES.is_dir():
        pytest.skip(f"the shared scenes are not at {SCENES}")
    return SCENES


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("RS_TEXT_SEARCH_CACHE", str(root))
    return root


@pytest.fixture
def run(cache, tiny_model_dir, capsys):
    """``run(*argv)``: the command line's real entry point with the tiny model on CPU -> (exit code, stdout, stderr)."""
    from rs_text_search.cli import main

    def invoke(*argv):
        code = main([*argv, "--model", str(tiny_model_dir), "--provider", "cpu"])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    """A second tiny model (another seed): its indexes must never mix with the first one's."""
    pytest.importorskip("open_clip")
    from training.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny-seed1", seed=1)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from rs_text_search.core.model import load_model

    return load_model(tiny_model_dir, provider="cpu")


def tiles_raster(path: Path, tile_px: int, grid: list[list[int]], crs="EPSG:32633", **kw) -> Path:
    """A raster made of tile_px squares; grid[r][c] is a seed for that tile's texture (-1: constant grey).

    Tiles with the same seed are pixel-identical, so an encoder must give them the same embedding.
    """
    rows = []
    for seeds in grid:
        blocks = [np.full((3, tile_px, tile_px), 90, np.uint8) if s < 0 else
                  np.random.default_rng(s).integers(0, 256, (3, tile_px, tile_px), dtype=np.uint8) for s in seeds]
        rows.append(np.concatenate(blocks, axis=2))
    return write_geotiff(path, np.concatenate(rows, axis=1), crs=crs, **kw)
