"""Child process of figures 6 and 7 (``bench.fixed_costs``); prints one JSON line.

Run by file path, not ``-m``: the engine comes from ``PYTHONPATH`` (the checkout, or an older commit's
``rs_text_search`` for the before figure), so nothing here imports the ``bench`` package.

    python bench/fixed_costs_child.py overhead MODEL WORK 100,300,1000 CACHE
    python bench/fixed_costs_child.py empty MODEL WORK 100000 coverage|read-all
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _small_rasters(folder: Path, count: int, tile_px: int) -> list[tuple[Path, int]]:
    """``count`` GeoTIFFs of 1, 2, 2 and 4 tiles in turn (textured noise, one seed each), made once."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        rows, cols = 1 + i % 2, 1 + (i // 2) % 2
        path = folder / f"r{i:05d}-{tile_px}.tif"
        if not path.is_file():
            data = np.random.default_rng(i).integers(0, 256, (3, rows * tile_px, cols * tile_px), dtype=np.uint8)
            with rasterio.open(path, "w", driver="GTiff", width=cols * tile_px, height=rows * tile_px, count=3,
                               dtype="uint8", crs="EPSG:32633", tiled=True,
                               transform=from_origin(500_000.0 + 1_000.0 * i, 4_000_000.0, 1.0, 1.0)) as dst:
                dst.write(data)
        out.append((path, rows * cols))
    return out


def _encode_ms(model, max_batch: int, repeats: int = 7) -> dict[int, float]:
    """Median ms of one encoder call for batches of 1 to ``max_batch`` tiles (interleaved repeats)."""
    pixels = model.preprocess(list(np.random.default_rng(0).integers(0, 256, (max_batch, model.image_size,
                                                                               model.image_size, 3), dtype=np.uint8)))
    model.embed_preprocessed(pixels)  # warm-up
    times: dict[int, list[float]] = {k: [] for k in range(1, max_batch + 1)}
    for _ in range(repeats):
        for k in times:
            tick = time.perf_counter()
            model.embed_preprocessed(pixels[:k])
            times[k].append((time.perf_counter() - tick) * 1000)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def overhead(model_dir: str, work: str, counts: str, cache: str) -> dict:
    from rs_text_search.core.indexing import build_index
    from rs_text_search.core.model import load_model
    from rs_text_search.core.sources import open_raster
    from rs_text_search.core.tiling import GridSpec

    marks = sorted({int(c) for c in counts.split(",") if c})
    model = load_model(model_dir, provider="auto")
    rasters = _small_rasters(Path(work) / "rasters", marks[-1], model.image_size)
    encode_ms = _encode_ms(model, max(tiles for _, tiles in rasters))
    shutil.rmtree(cache, ignore_errors=True)
    grid = GridSpec(model.image_size)
    with open_raster(rasters[0][0]) as source:  # warm-up in a throwaway cache: first imports (faiss, pyproj...)
        build_index(source, model, grid, root=Path(cache) / "warm-up")
    seconds, tiles, encoding = [], [], []
    for path, n_tiles in rasters:
        tick = time.perf_counter()
        with open_raster(path) as source:
            _, stats = build_index(source, model, grid, root=Path(cache))
        seconds.append(time.perf_counter() - tick)
        tiles.append(n_tiles)
        encoding.append(stats.seconds_encoding)
    stretches = []
    for start, end in zip([0, *marks[:-1]], marks):
        wall, n = sum(seconds[start:end]), end - start
        encoder = sum(encode_ms[t] for t in tiles[start:end]) / 1000
        stretches.append({"from": start + 1, "to": end, "seconds": round(wall, 2), "tiles": sum(tiles[start:end]),
                          "encoder_seconds": round(encoder, 2),
                          "overhead_ms": round((wall - encoder) / n * 1000, 1),
                          "overhead_ms_pipeline_encode": round((wall - sum(encoding[start:end])) / n * 1000, 1)})
    return {"tile_px": model.image_size, "provider": model.provider, "encode_ms_by_batch": encode_ms,
            "stretches": stretches}


def _sparse_raster(path: Path, side_px: int) -> Path:
    """An all-nodata ``side_px`` square GeoTIFF of 1 m pixels with no block written (SPARSE_OK)."""
    import rasterio
    from rasterio.transform import from_origin

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="GTiff", width=side_px, height=side_px, count=3, dtype="uint8",
                           nodata=0, crs="EPSG:32633", transform=from_origin(500_000.0, 4_000_000.0, 1.0, 1.0),
                           tiled=True, blockxsize=512, blockysize=512, BIGTIFF="YES", SPARSE_OK=True):
            pass
    return path


def empty(model_dir: str, work: str, side: str, mode: str) -> dict:
    from rs_text_search.core.errors import RasterError
    from rs_text_search.core.indexing import build_index, default_grid
    from rs_text_search.core.model import load_model
    from rs_text_search.core.sources import RasterioSource
    from rs_text_search.core.tiling import tile_grid

    if mode == "read-all":  # as before sources had a coverage query: every tile is read
        RasterioSource.coverage = lambda self: None
    model = load_model(model_dir, provider="auto")
    path = _sparse_raster(Path(work) / f"empty-{side}.tif", int(side))
    cache = Path(work) / f"cache-{mode}"
    shutil.rmtree(cache, ignore_errors=True)
    tick = time.perf_counter()
    with RasterioSource(path) as source:
        grid = default_grid(source, model)
        n_rows, n_cols, _ = tile_grid(source.width, source.height, grid)
        try:
            build_index(source, model, grid, root=cache)
            message = None
        except RasterError as exc:
            message = str(exc)
    seconds = time.perf_counter() - tick
    shutil.rmtree(cache, ignore_errors=True)
    return {"side_px": int(side), "file_kib": round(path.stat().st_size / 1024, 1), "tile_px": grid.tile_size_px,
            "tiles_total": n_rows * n_cols, "seconds": round(seconds, 2), "message": message, "mode": mode}


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    print(json.dumps({"overhead": overhead, "empty": empty}[command](*arguments)))
