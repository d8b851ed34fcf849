"""Figures 2 and 4: indexing efficiency and peak memory, on large generated GeoTIFFs.

Figure 2, pipeline efficiency = end-to-end indexing tiles/s (read, decode, preprocess, encode,
SQLite, faiss; ``build_index`` with the engine's defaults, in a child process) divided by the
encoder's tiles/s on tiles already in memory (``embed_preprocessed`` at the engine's batch size,
same ONNX Runtime settings). It is measured twice:

- on the large raster, the encoder timed just before and just after the (minutes-long) run;
  other processes' load can drift in between, so this number is only as steady as the machine;
- on the medium raster of :mod:`bench.sweep`, in interleaved rounds with the encoder timed just
  before each run (median over rounds), together with other settings.

The single-threaded cost of each stage per tile is measured beside it, to say where the time goes.

Figure 4, peak RSS (``VmHWM``) of the child indexing the large raster versus the small one: as the
engine runs (it limits GDAL's block cache, ``core.sources.limit_block_cache``) and, for comparison,
with ``GDAL_CACHEMAX=5%`` (GDAL's own default, as a user could set it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import REPO_ROOT, ratio, target
from .sweep import comparable_engine_cases

EFFICIENCY_TARGET = 0.9
MEMORY_FLAT_TARGET = 1.2  # peak RSS of the large raster / the small one
GDAL_DEFAULT_CACHE = "5%"  # GDAL's own block cache limit, which the engine replaces


def index_in_child(raster: Path, model_dir: Path, work: Path, env: dict[str, str] | None = None,
                   save_vectors: Path | None = None, **options: int | bool) -> dict[str, Any]:
    """Run :mod:`bench.index_child` on ``raster`` into a fresh cache folder (removed afterwards).

    ``options`` become its command-line options (``batch_size=8`` -> ``--batch-size 8``; ``True`` -> a flag).
    """
    root = Path(tempfile.mkdtemp(prefix="index-", dir=work))
    command = [sys.executable, "-m", "bench.index_child", "--raster", str(raster), "--model", str(model_dir),
               "--root", str(root)]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if value is True:
            command.append(flag)
        elif value is not False:
            command += [flag, str(value)]
    if save_vectors is not None:
        command += ["--save-vectors", str(save_vectors)]
    child_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=child_env, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"indexing child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sample_tiles(source, model, count: int) -> list:
    """``count`` consecutive tiles (row-major, as the pipeline reads them) from the middle of the grid."""
    from rs_text_search.core.tiling import GridSpec, tile_grid

    _, _, tiles = tile_grid(source.width, source.height, GridSpec(tile_size_px=model.image_size))
    start = max(0, min(len(tiles) // 2, len(tiles) - count))
    return tiles[start : start + count]


def _write_ms(source, model, tiles: list, work: Path) -> float:
    """ms per tile of the engine's catalog rows (bounds, lon/lat corners; calling thread) and their SQLite
    transaction (writer thread), one batch at a time."""
    from rs_text_search.core.index import STATUS, TileIndex
    from rs_text_search.core.indexing import _new_meta
    from rs_text_search.core.model import BATCH_SIZES
    from rs_text_search.core.pipeline import Batch, batch_rows, write_rows

    batch_size = BATCH_SIZES[model.provider]

    folder = Path(tempfile.mkdtemp(prefix="write-", dir=work))
    try:
        index = TileIndex(folder, _new_meta(source, model, _grid(model), folder.name, (1, 1)))
        vectors = np.ones((batch_size, model.embed_dim), np.float32)
        db = index.connect()
        batches = [tiles[i : i + batch_size] for i in range(0, len(tiles), batch_size)]
        timed = batches[1:] or batches  # the first batch pays one-off costs (pyproj transformer, schema)
        for number, chunk in enumerate([batches[0]] + timed):
            if number == 1 or len(batches) == 1:
                started = time.perf_counter()
            status = [STATUS["embedded"]] * len(chunk)
            write_rows(db, batch_rows(source, Batch(chunk, status, np.zeros(0)), vectors[: len(chunk)]))
        seconds = time.perf_counter() - started
        db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return round(seconds / sum(len(chunk) for chunk in timed) * 1000, 3)


def _grid(model):
    from rs_text_search.core.tiling import GridSpec

    return GridSpec(tile_size_px=model.image_size)


def stage_costs(raster: Path, model, single_thread_model, count: int, work: Path) -> tuple[dict[str, Any], np.ndarray]:
    """One-thread ms per tile of each stage of the engine's pipeline; returns also the pixels.

    Tiles are consecutive, as the pipeline reads them, so decoded GDAL blocks are reused the same way.
    """
    from rs_text_search.core.model import BATCH_SIZES
    from rs_text_search.core.pipeline import classify
    from rs_text_search.core.sources import RasterioSource

    batch_size = BATCH_SIZES[model.provider]  # preprocessed a batch at a time, as the pipeline does

    def per_tile_ms(work_fn) -> float:
        started = time.perf_counter()
        work_fn()
        return round((time.perf_counter() - started) / count * 1000, 3)

    with RasterioSource(raster) as source:
        tiles = _sample_tiles(source, model, count)
        count = len(tiles)
        reads: list = []
        read_ms = per_tile_ms(lambda: reads.extend(source.read_masked(t.window, model.image_size) for t in tiles))
        write_ms = _write_ms(source, model, tiles, work)
    rgbs = [rgb for rgb, _ in reads]
    pixels = model.preprocess(rgbs)
    batch = np.ascontiguousarray(np.resize(pixels, (32, *pixels.shape[1:])))
    single_thread_model.embed_preprocessed(batch)  # warm-up
    started = time.perf_counter()
    single_thread_model.embed_preprocessed(batch)
    encode_1thread_ms = round((time.perf_counter() - started) / len(batch) * 1000, 3)
    costs = {
        "read_decode_ms": read_ms,
        "classify_ms": per_tile_ms(lambda: [classify(r, v) for r, v in reads]),
        "preprocess_ms": per_tile_ms(lambda: [model.preprocess(rgbs[i : i + batch_size])
                                              for i in range(0, len(rgbs), batch_size)]),
        "write_ms": write_ms,
        "encode_1thread_ms": encode_1thread_ms,
    }
    other = costs["read_decode_ms"] + costs["classify_ms"] + costs["preprocess_ms"] + costs["write_ms"]
    # With every core busy, indexing / encoder-alone cannot exceed encode CPU / (encode + other stages' CPU).
    costs["efficiency_ceiling_cpu_bound"] = ratio(encode_1thread_ms, encode_1thread_ms + other)
    return costs, pixels


def run(model_dir: Path, large: tuple[Path, dict], small: tuple[Path, dict], work: Path, models: dict[str, Any],
        encoder_seconds: float, stage_tiles: int, gdal_variant: bool,
        vectors_out: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure figure 2 on the large raster and figure 4; returns (pipeline figure, memory figure).

    models: the encoder per ONNX Runtime setting (:func:`bench.sweep.encoder_models`);
    gdal_variant: also index the large and small rasters with GDAL's own default block cache.
    """
    from rs_text_search.core.model import BATCH_SIZES
    from rs_text_search.core.pipeline import DEFAULT_READERS

    from .sweep import encoder_rate

    batch_size = BATCH_SIZES[models["default"].provider]
    large_path, large_info = large
    small_path, small_info = small
    costs, pixels = stage_costs(large_path, models["default"], models["1 thread"], stage_tiles, work)
    before = encoder_rate(models["default"], pixels, batch_size, encoder_seconds)
    run_large = index_in_child(large_path, model_dir, work, save_vectors=vectors_out)
    after = encoder_rate(models["default"], pixels, batch_size, encoder_seconds)
    encoder = round((before + after) / 2, 2)
    costs["encode_ms"] = round(1000 / encoder, 3)
    costs["encode_share_in_pipeline"] = ratio(run_large["seconds_encoding"], run_large["seconds"])
    efficiency = ratio(run_large["tiles_per_s"], encoder)
    pipeline = {
        "raster": large_info,
        "defaults": {"batch_size": batch_size, "readers": DEFAULT_READERS,
                     "provider": models["default"].provider},
        "encoder_in_memory_tiles_per_s": {"before": before, "after": after, "mean": encoder},
        "indexing": run_large,
        "efficiency": efficiency,
        "stage_costs_single_thread": costs,
        "targets": [target(f"indexing / encoder tiles/s, engine defaults, {large_info['size_px']:,} px raster",
                           efficiency, f">= {EFFICIENCY_TARGET}",
                           None if efficiency is None else efficiency >= EFFICIENCY_TARGET)],
    }
    run_small = index_in_child(small_path, model_dir, work)
    runs = {"large_engine": run_large, "small_engine": run_small}
    if gdal_variant:
        for name, path in (("large", large_path), ("small", small_path)):
            runs[f"{name}_gdal_default_cache"] = index_in_child(path, model_dir, work, gdal_cachemax=GDAL_DEFAULT_CACHE)
    return pipeline, _memory(large_info, small_info, runs, models["default"].embed_dim)


def add_interleaved(pipeline: dict[str, Any], block: dict[str, Any]) -> None:
    """Add the medium raster's interleaved rounds (bench.sweep) to the pipeline figure."""
    cases = {name: case for name, case in block["cases"].items() if case["kind"] == "engine"}
    pipeline["sweep"] = {"raster": block["raster"], "rounds": block["rounds"], "cases": cases}
    defaults = cases.get("engine defaults", {}).get("efficiency_median")
    size = f"{block['raster']['size_px']:,} px raster, {block['rounds']} interleaved rounds"
    pipeline["efficiency_interleaved"] = defaults
    pipeline["targets"].append(target(f"same, {size}", defaults, f">= {EFFICIENCY_TARGET}",
                                      None if defaults is None else defaults >= EFFICIENCY_TARGET))
    others = comparable_engine_cases(cases)
    if others:
        name, best = max(others, key=lambda item: item[1]["tiles_per_s_median"])
        value = best.get("efficiency_median")
        pipeline["fastest_setting"] = {"setting": name, "tiles_per_s": best["tiles_per_s_median"],
                                       "efficiency": value}
        pipeline["targets"].append(target(f"same, fastest other setting ({name})", value, f">= {EFFICIENCY_TARGET}",
                                          None if value is None else value >= EFFICIENCY_TARGET))


def _memory(large_info: dict, small_info: dict, runs: dict[str, dict], embed_dim: int) -> dict[str, Any]:
    memory = {
        "large_raster": large_info,
        "small_raster": small_info,
        "runs": {name: {k: r.get(k) for k in ("peak_rss_mib", "rss_after_model_load_mib",
                                              "peak_rss_after_model_load_mib", "peak_rss_before_finalize_mib",
                                              "tiles_total", "tiles_per_s", "gdal_cachemax")}
                 for name, r in runs.items()},
        "embedding_kib": round(embed_dim * 4 / 1024, 3),
        "targets": [],
    }
    for suffix, label in (("engine", "as the engine runs"),
                          ("gdal_default_cache", f"GDAL_CACHEMAX={GDAL_DEFAULT_CACHE} (GDAL's own default)")):
        if f"large_{suffix}" not in runs:
            continue
        peak = runs[f"large_{suffix}"]["peak_rss_mib"]
        flat = ratio(peak, runs[f"small_{suffix}"]["peak_rss_mib"])
        over_raw = ratio(peak, large_info["uncompressed_mib"])
        memory[f"peak_ratio_{suffix}"] = flat
        memory[f"peak_over_uncompressed_{suffix}"] = over_raw
        memory["targets"] += [
            target(f"peak RSS large / small, {label}", flat, f"<= {MEMORY_FLAT_TARGET}",
                   None if flat is None else flat <= MEMORY_FLAT_TARGET),
            target(f"peak RSS / uncompressed large raster, {label}", over_raw, "far below 1 (< 0.5)",
                   None if over_raw is None else over_raw < 0.5),
        ]
    return memory
