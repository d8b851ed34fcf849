"""Figures 2 and 4: indexing efficiency and peak memory, on large generated GeoTIFFs.

Figure 2, pipeline efficiency = end-to-end indexing tiles/s (read, decode, preprocess, encode,
SQLite, faiss; ``build_index`` with the engine's defaults, in a child process) divided by the
encoder's tiles/s on tiles already in memory (``embed_preprocessed`` at the engine's batch size,
same threads), measured just before and just after the indexing run and averaged, so load from
other processes affects both sides alike. The single-threaded cost of each stage per tile is
measured beside it, to say where the time goes.

Figure 4, peak RSS (``VmHWM``) of the child indexing the large raster versus the small one, with
GDAL's default block cache and, to show its share, with ``GDAL_CACHEMAX`` set small.

An optional sweep indexes the small raster with other batch sizes, reader counts and ONNX Runtime
thread counts: the measurements behind the engine's defaults.
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

from .common import REPO_ROOT, interleaved_rates, ratio, target

EFFICIENCY_TARGET = 0.9
MEMORY_FLAT_TARGET = 1.2  # peak RSS of the large raster / the small one
SMALL_GDAL_CACHE_MB = 64


def index_in_child(raster: Path, model_dir: Path, work: Path, env: dict[str, str] | None = None,
                   save_vectors: Path | None = None, **options: int) -> dict[str, Any]:
    """Run :mod:`bench.index_child` on ``raster`` into a fresh cache folder (removed afterwards)."""
    root = Path(tempfile.mkdtemp(prefix="index-", dir=work))
    command = [sys.executable, "-m", "bench.index_child", "--raster", str(raster), "--model", str(model_dir),
               "--root", str(root)]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
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


def _sample_windows(source, model, count: int) -> list:
    from rs_text_search.core.tiling import GridSpec, tile_grid

    _, _, tiles = tile_grid(source.width, source.height, GridSpec(tile_size_px=model.image_size))
    step = max(1, len(tiles) // count)
    return [t.window for t in tiles[::step][:count]]


def stage_costs(raster: Path, model, count: int) -> tuple[dict[str, float], np.ndarray]:
    """Single-threaded ms per tile of read+decode and of classify+preprocess; returns also the pixels."""
    from rs_text_search.core.indexing import _classify
    from rs_text_search.core.sources import RasterioSource

    with RasterioSource(raster) as source:
        windows = _sample_windows(source, model, count)
        started = time.perf_counter()
        reads = [source.read_masked(w, model.image_size) for w in windows]
        read_s = time.perf_counter() - started
    started = time.perf_counter()
    for rgb, valid in reads:
        _classify(rgb, valid)
    pixels = model.preprocess([rgb for rgb, _ in reads])
    prep_s = time.perf_counter() - started
    return ({"read_decode_ms": round(read_s / count * 1000, 3),
             "classify_preprocess_ms": round(prep_s / count * 1000, 3)}, pixels)


def _encoder_rate(model, pixels: np.ndarray, batch: int, seconds: float) -> float:
    chunk = np.ascontiguousarray(np.resize(pixels, (batch, *pixels.shape[1:])))

    def work() -> int:
        model.embed_preprocessed(chunk)
        return batch

    work()
    return interleaved_rates({"encoder": work}, 1, seconds)["encoder"]["per_s"]


def run(model_dir: Path, large: tuple[Path, dict], small: tuple[Path, dict], work: Path,
        encoder_seconds: float, stage_tiles: int, gdal_variant: bool, sweep: bool,
        vectors_out: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure figures 2 and 4; returns (pipeline figure, memory figure)."""
    from rs_text_search.core.indexing import DEFAULT_BATCH_SIZE, DEFAULT_READERS
    from rs_text_search.core.model import load_model

    large_path, large_info = large
    small_path, small_info = small
    model = load_model(model_dir, provider="auto")
    costs, pixels = stage_costs(large_path, model, stage_tiles)
    before = _encoder_rate(model, pixels, DEFAULT_BATCH_SIZE, encoder_seconds)
    run_large = index_in_child(large_path, model_dir, work, save_vectors=vectors_out)
    after = _encoder_rate(model, pixels, DEFAULT_BATCH_SIZE, encoder_seconds)
    encoder = (before + after) / 2
    costs["encode_ms"] = round(1000 / encoder, 3)
    costs["encode_share_in_pipeline"] = ratio(run_large["seconds_encoding"], run_large["seconds"])
    efficiency = ratio(run_large["tiles_per_s"], encoder)
    pipeline = {
        "raster": large_info,
        "defaults": {"batch_size": DEFAULT_BATCH_SIZE, "readers": DEFAULT_READERS, "provider": model.provider},
        "encoder_in_memory_tiles_per_s": {"before": before, "after": after, "mean": round(encoder, 2)},
        "indexing": run_large,
        "efficiency": efficiency,
        "stage_costs_single_thread": costs,
        "targets": [target("indexing tiles/s / encoder tiles/s", efficiency, f">= {EFFICIENCY_TARGET}",
                           None if efficiency is None else efficiency >= EFFICIENCY_TARGET)],
    }
    if sweep:
        pipeline["sweep"] = _sweep(small_path, model_dir, work)

    run_small = index_in_child(small_path, model_dir, work)
    runs = {"large_default_cache": run_large, "small_default_cache": run_small}
    if gdal_variant:
        env = {"GDAL_CACHEMAX": str(SMALL_GDAL_CACHE_MB)}
        runs["large_gdal_cache_64mb"] = index_in_child(large_path, model_dir, work, env=env)
        runs["small_gdal_cache_64mb"] = index_in_child(small_path, model_dir, work, env=env)
    flat = ratio(run_large["peak_rss_mib"], run_small["peak_rss_mib"])
    memory = {
        "large_raster": large_info,
        "small_raster": small_info,
        "runs": {name: {k: r[k] for k in ("peak_rss_mib", "rss_after_model_load_mib", "peak_rss_after_model_load_mib",
                                          "tiles_total", "tiles_per_s", "gdal_cachemax")}
                 for name, r in runs.items()},
        "peak_ratio_large_over_small": flat,
        "peak_over_uncompressed": ratio(run_large["peak_rss_mib"], large_info["uncompressed_mib"]),
        "targets": [
            target("peak RSS large / small", flat, f"<= {MEMORY_FLAT_TARGET}",
                   None if flat is None else flat <= MEMORY_FLAT_TARGET),
            target("peak RSS / uncompressed raster", ratio(run_large["peak_rss_mib"], large_info["uncompressed_mib"]),
                   "far below 1", run_large["peak_rss_mib"] < 0.5 * large_info["uncompressed_mib"]),
        ],
    }
    if gdal_variant:
        small_cache_flat = ratio(runs["large_gdal_cache_64mb"]["peak_rss_mib"],
                                 runs["small_gdal_cache_64mb"]["peak_rss_mib"])
        memory["peak_ratio_with_gdal_cache_64mb"] = small_cache_flat
        memory["targets"].append(target(f"same, GDAL_CACHEMAX={SMALL_GDAL_CACHE_MB} MB", small_cache_flat,
                                        f"<= {MEMORY_FLAT_TARGET}", None if small_cache_flat is None
                                        else small_cache_flat <= MEMORY_FLAT_TARGET))
    return pipeline, memory


def _sweep(raster: Path, model_dir: Path, work: Path) -> list[dict[str, Any]]:
    """Indexing tiles/s of the small raster under other settings (one child run each)."""
    settings = [
        {"batch_size": 32, "readers": 2, "threads": 0},
        {"batch_size": 32, "readers": 1, "threads": 0},
        {"batch_size": 32, "readers": 1, "threads": 1},
        {"batch_size": 32, "readers": 3, "threads": 0},
        {"batch_size": 8, "readers": 2, "threads": 0},
        {"batch_size": 64, "readers": 2, "threads": 0},
    ]
    rows = []
    for options in settings:
        result = index_in_child(raster, model_dir, work, **{k: v for k, v in options.items() if v})
        rows.append({**options, "tiles_per_s": result["tiles_per_s"], "peak_rss_mib": result["peak_rss_mib"]})
    return rows
