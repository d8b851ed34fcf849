"""Figures 2 and 4: indexing efficiency and peak memory, on large generated GeoTIFFs.

Figure 2, pipeline efficiency = end-to-end indexing tiles/s (read, decode, preprocess, encode,
SQLite, faiss; ``build_index`` with the engine's defaults, in a child process) divided by the
encoder's tiles/s on tiles already in memory (``embed_preprocessed`` at the engine's batch size,
same threads), measured just before and just after the indexing run and averaged, so load from
other processes affects both sides alike. The single-threaded cost of each stage per tile is
measured beside it, to say where the time goes.

Figure 4, peak RSS (``VmHWM``) of the child indexing the large raster versus the small one, with
GDAL's default block cache and, to show its share, with ``GDAL_CACHEMAX`` set small.

A sweep indexes a medium raster with other reader counts, ONNX Runtime thread settings and the
faster functions of :mod:`bench.proposals` patched in: the measurements behind the proposed
defaults. Each setting's efficiency is taken against the in-memory encoder with the same ONNX
Runtime setting (all encoder settings are measured, interleaved, before and after the runs).
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


def _sample_windows(source, model, count: int) -> list:
    from rs_text_search.core.tiling import GridSpec, tile_grid

    _, _, tiles = tile_grid(source.width, source.height, GridSpec(tile_size_px=model.image_size))
    step = max(1, len(tiles) // count)
    return [t.window for t in tiles[::step][:count]]


def stage_costs(raster: Path, model, single_thread_model, count: int) -> tuple[dict[str, Any], np.ndarray]:
    """One-thread ms per tile of each stage (engine and bench.proposals versions); returns also the pixels."""
    from rs_text_search.core.indexing import _classify
    from rs_text_search.core.sources import RasterioSource

    from . import proposals

    def per_tile_ms(work) -> float:
        started = time.perf_counter()
        work()
        return round((time.perf_counter() - started) / count * 1000, 3)

    with RasterioSource(raster) as source:
        windows = _sample_windows(source, model, count)
        reads: list = []
        read_ms = per_tile_ms(lambda: reads.extend(source.read_masked(w, model.image_size) for w in windows))
    rgbs = [rgb for rgb, _ in reads]
    pixels = model.preprocess(rgbs)
    batch = np.ascontiguousarray(np.resize(pixels, (32, *pixels.shape[1:])))
    single_thread_model.embed_preprocessed(batch)  # warm-up
    started = time.perf_counter()
    single_thread_model.embed_preprocessed(batch)
    encode_1thread_ms = round((time.perf_counter() - started) / len(batch) * 1000, 3)
    costs = {
        "read_decode_ms": read_ms,
        "classify_ms": per_tile_ms(lambda: [_classify(r, v) for r, v in reads]),
        "classify_proposed_ms": per_tile_ms(lambda: [proposals.classify(r, v) for r, v in reads]),
        "preprocess_ms": per_tile_ms(lambda: model.preprocess(rgbs)),
        "preprocess_proposed_ms": per_tile_ms(lambda: proposals.preprocess(rgbs, model.image_spec)),
        "encode_1thread_ms": encode_1thread_ms,
        "proposed_identical": proposals.check_identical(reads, model.image_spec),
    }
    engine_cpu = costs["read_decode_ms"] + costs["classify_ms"] + costs["preprocess_ms"]
    proposed_cpu = costs["read_decode_ms"] + costs["classify_proposed_ms"] + costs["preprocess_proposed_ms"]
    # With every core busy, indexing / encoder-alone cannot exceed encode CPU / (encode + other stages' CPU).
    costs["efficiency_ceiling_cpu_bound"] = ratio(encode_1thread_ms, encode_1thread_ms + engine_cpu)
    costs["efficiency_ceiling_cpu_bound_proposed"] = ratio(encode_1thread_ms, encode_1thread_ms + proposed_cpu)
    return costs, pixels


def _encoder_models(model_dir: Path) -> dict[str, Any]:
    """The encoder under each ONNX Runtime setting the indexing runs use (keys match ``_ort_setting``)."""
    from rs_text_search.core.model import load_model

    from .proposals import no_spin_sessions

    models = {"default": load_model(model_dir, provider="auto"),
              "1 thread": load_model(model_dir, provider="auto", threads=1)}
    with no_spin_sessions():
        models["no spin"] = load_model(model_dir, provider="auto")
    return models


def _ort_setting(options: dict[str, Any]) -> str:
    return "1 thread" if options.get("threads") == 1 else ("no spin" if options.get("no_spin") else "default")


def _encoder_rates(models: dict[str, Any], pixels: np.ndarray, batch: int, seconds: float) -> dict[str, float]:
    """In-memory tiles/s of each encoder setting, at the indexing batch size (interleaved)."""
    chunk = np.ascontiguousarray(np.resize(pixels, (batch, *pixels.shape[1:])))

    def case(model):
        def work() -> int:
            model.embed_preprocessed(chunk)
            return batch

        work()
        return work

    rates = interleaved_rates({name: case(m) for name, m in models.items()}, 1, seconds)
    return {name: value["per_s"] for name, value in rates.items()}


def run(model_dir: Path, large: tuple[Path, dict], small: tuple[Path, dict], medium: tuple[Path, dict] | None,
        work: Path, encoder_seconds: float, stage_tiles: int, gdal_variant: bool,
        vectors_out: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure figures 2 and 4; returns (pipeline figure, memory figure).

    medium: raster of the settings sweep (None: no sweep); gdal_variant: also index the large and
    small rasters with a small GDAL block cache.
    """
    from rs_text_search.core.indexing import DEFAULT_BATCH_SIZE, DEFAULT_READERS

    large_path, large_info = large
    small_path, small_info = small
    models = _encoder_models(model_dir)
    costs, pixels = stage_costs(large_path, models["default"], models["1 thread"], stage_tiles)
    before = _encoder_rates(models, pixels, DEFAULT_BATCH_SIZE, encoder_seconds)
    run_large = index_in_child(large_path, model_dir, work, save_vectors=vectors_out)
    sweep = _sweep(medium[0], model_dir, work) if medium else None
    after = _encoder_rates(models, pixels, DEFAULT_BATCH_SIZE, encoder_seconds)
    encoder = {name: round((before[name] + after[name]) / 2, 2) for name in before}
    costs["encode_ms"] = round(1000 / encoder["default"], 3)
    costs["encode_share_in_pipeline"] = ratio(run_large["seconds_encoding"], run_large["seconds"])
    efficiency = ratio(run_large["tiles_per_s"], encoder["default"])
    pipeline = {
        "raster": large_info,
        "defaults": {"batch_size": DEFAULT_BATCH_SIZE, "readers": DEFAULT_READERS,
                     "provider": models["default"].provider},
        "encoder_in_memory_tiles_per_s": {"before": before, "after": after, "mean": encoder},
        "indexing": run_large,
        "efficiency": efficiency,
        "stage_costs_single_thread": costs,
        "targets": [target("indexing tiles/s / encoder tiles/s (engine defaults)", efficiency,
                           f">= {EFFICIENCY_TARGET}", None if efficiency is None else efficiency >= EFFICIENCY_TARGET)],
    }
    if sweep:
        for row in sweep:
            row["encoder_tiles_per_s"] = encoder[row["ort_setting"]]
            row["efficiency"] = ratio(row["tiles_per_s"], row["encoder_tiles_per_s"])
        pipeline["sweep"] = {"raster": medium[1], "rows": sweep}
        best = max((r for r in sweep if r["proposed_functions"]), key=lambda r: r["tiles_per_s"], default=None)
        if best:
            pipeline["targets"].append(target(
                f"same, with the proposed functions, best setting ({best['setting']}, {medium[1]['size_px']:,} px "
                "raster)", best["efficiency"], f">= {EFFICIENCY_TARGET}",
                None if best["efficiency"] is None else best["efficiency"] >= EFFICIENCY_TARGET))

    run_small = index_in_child(small_path, model_dir, work)
    runs = {"large_default_cache": run_large, "small_default_cache": run_small}
    if gdal_variant:
        env = {"GDAL_CACHEMAX": str(SMALL_GDAL_CACHE_MB)}
        runs["large_gdal_cache_64mb"] = index_in_child(large_path, model_dir, work, env=env)
        runs["small_gdal_cache_64mb"] = index_in_child(small_path, model_dir, work, env=env)
    flat = ratio(run_large["peak_rss_mib"], run_small["peak_rss_mib"])
    over_raw = ratio(run_large["peak_rss_mib"], large_info["uncompressed_mib"])
    memory = {
        "large_raster": large_info,
        "small_raster": small_info,
        "runs": {name: {k: r[k] for k in ("peak_rss_mib", "rss_after_model_load_mib", "peak_rss_after_model_load_mib",
                                          "tiles_total", "tiles_per_s", "gdal_cachemax")}
                 for name, r in runs.items()},
        "peak_ratio_large_over_small": flat,
        "peak_over_uncompressed": over_raw,
        "targets": [
            target("peak RSS large / small", flat, f"<= {MEMORY_FLAT_TARGET}",
                   None if flat is None else flat <= MEMORY_FLAT_TARGET),
            target("peak RSS / uncompressed large raster", over_raw, "far below 1 (< 0.5)",
                   None if over_raw is None else over_raw < 0.5),
        ],
    }
    if gdal_variant:
        cached = runs["large_gdal_cache_64mb"]["peak_rss_mib"]
        small_cache_flat = ratio(cached, runs["small_gdal_cache_64mb"]["peak_rss_mib"])
        memory["peak_ratio_with_gdal_cache_64mb"] = small_cache_flat
        memory["targets"] += [
            target(f"peak RSS large / small, GDAL_CACHEMAX={SMALL_GDAL_CACHE_MB} MB", small_cache_flat,
                   f"<= {MEMORY_FLAT_TARGET}", None if small_cache_flat is None
                   else small_cache_flat <= MEMORY_FLAT_TARGET),
            target(f"peak RSS / uncompressed large raster, GDAL_CACHEMAX={SMALL_GDAL_CACHE_MB} MB",
                   ratio(cached, large_info["uncompressed_mib"]), "far below 1 (< 0.5)",
                   cached < 0.5 * large_info["uncompressed_mib"]),
        ]
    return pipeline, memory


SWEEP = [  # the defaults first and last, to show drift from other load
    {},
    {"readers": 1},
    {"threads": 1},
    {"threads": 1, "readers": 1},
    {"no_spin": True},
    {"proposed": True},
    {"proposed": True, "no_spin": True},
    {"proposed": True, "threads": 1},
    {"proposed": True, "threads": 1, "readers": 1},
    {},
]


def _sweep(raster: Path, model_dir: Path, work: Path) -> list[dict[str, Any]]:
    """Indexing tiles/s of ``raster`` under other settings (one child run each)."""
    rows = []
    for options in SWEEP:
        result = index_in_child(raster, model_dir, work, **options)
        rows.append({"setting": ", ".join(f"{k}={v}" for k, v in options.items()) or "engine defaults",
                     "batch_size": result["batch_size"], "readers": result["readers"],
                     "ort_threads": result["ort_threads"] or "default", "no_spin": result["no_spin"],
                     "proposed_functions": result["proposed"], "ort_setting": _ort_setting(options),
                     "tiles_per_s": result["tiles_per_s"], "peak_rss_mib": result["peak_rss_mib"]})
    return rows
