"""Child process of figures 2 and 4: index one raster with the engine and report time and peak memory.

Run as ``python -m bench.index_child --raster R --model M --root DIR [...]``. It loads the model,
records its resident memory, runs ``build_index`` (readers -> ONNX encoder -> SQLite writer ->
faiss) into a fresh cache folder, and prints one JSON line: tiles, seconds, tiles/s, the time
spent in the encoder, and ``VmHWM`` (peak RSS) from ``/proc/self/status``. Running it in a fresh
process makes the peak belong to this one indexing run only. ``--save-vectors`` writes the
embeddings (``.npy``) for the search figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--root", required=True, help="cache root for the index (should be empty)")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the engine's default for the provider")
    parser.add_argument("--readers", type=int, default=0, help="0: the engine's DEFAULT_READERS")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--save-vectors", default=None, help="write the embeddings to this .npy file")
    parser.add_argument("--auto-tiles", action="store_true",
                        help="the engine's automatic tile size (from the pixel size) instead of the input size")
    parser.add_argument("--gdal-cachemax", default=None,
                        help="GDAL_CACHEMAX as a user would set it (e.g. 5%%, GDAL's own default); "
                             "unset: the engine limits the block cache (core.sources.limit_block_cache)")
    args = parser.parse_args(argv)
    if args.gdal_cachemax:
        os.environ["GDAL_CACHEMAX"] = args.gdal_cachemax  # before GDAL loads, as from a shell

    import numpy as np

    from rs_text_search.core.index import TileIndex
    from rs_text_search.core.indexing import build_index, default_grid
    from rs_text_search.core.model import load_model
    from rs_text_search.core.pipeline import DEFAULT_READERS
    from rs_text_search.core.sources import RasterioSource
    from rs_text_search.core.tiling import GridSpec

    from .common import current_rss_mib, peak_rss_mib

    finalize = TileIndex.finalize
    before_finalize: dict[str, float | None] = {}

    def finalize_and_record(self, *args, **kwargs) -> None:  # where the peak happens: indexing or the faiss index
        before_finalize.update(peak_rss_mib=peak_rss_mib(), rss_mib=current_rss_mib())
        finalize(self, *args, **kwargs)

    TileIndex.finalize = finalize_and_record
    readers = args.readers or DEFAULT_READERS
    model = load_model(args.model, provider="auto", threads=args.threads or None, batch_size=args.batch_size or None)
    batch_size = model.batch_size
    rss_after_load = current_rss_mib()
    peak_after_load = peak_rss_mib()
    started = time.perf_counter()
    # Tiles at the model's input size (one raster pixel per model pixel), as the in-memory encoder, the
    # stage costs and the user script see them: the same work in every figure. The engine's automatic
    # tile size would add a resampling step on these 1 m mosaics (78 px tiles enlarged to 128).
    with RasterioSource(args.raster) as source:
        grid = default_grid(source, model) if args.auto_tiles else GridSpec(tile_size_px=model.image_size)
        area_km2 = source.width * source.height * abs(source.transform[1] * source.transform[5]) / 1e6
        block_cache_mb = source.block_cache_mb
        index, stats = build_index(source, model, grid, root=Path(args.root), batch_size=batch_size, readers=readers)
    wall = time.perf_counter() - started
    peak_indexing = peak_rss_mib()  # before the bench's own copy of the vectors below
    if args.save_vectors:
        faiss_index, _ = index._load()  # the vectors the engine stored, in tile order
        np.save(args.save_vectors, faiss_index.reconstruct_n(0, faiss_index.ntotal))
    report = {
        "raster": args.raster,
        "provider": model.provider,
        "batch_size": batch_size,
        "readers": readers,
        "ort_threads": args.threads or None,
        "gdal_cachemax": args.gdal_cachemax or f"{block_cache_mb} MB (engine)",
        "tiles_total": stats.tiles_total,
        "tiles_embedded": stats.tiles_embedded,
        "tiles_skipped": stats.tiles_skipped_nodata + stats.tiles_skipped_constant,
        "seconds": round(wall, 3),
        "seconds_encoding": round(stats.seconds_encoding, 3),
        "tiles_per_s": round(stats.tiles_total / wall, 2),
        "tile_px": grid.tile_size_px,
        "km2_per_min": round(area_km2 / wall * 60, 1),
        "rss_after_model_load_mib": rss_after_load,
        "peak_rss_after_model_load_mib": peak_after_load,
        "peak_rss_mib": peak_indexing,
        "peak_rss_before_finalize_mib": before_finalize.get("peak_rss_mib"),
        "rss_before_finalize_mib": before_finalize.get("rss_mib"),
        "index_type": index.meta.get("index_type"),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
