"""Entry point of the benchmarks: ``python -m bench [--quick | --full] [--model DIR] ...``.

Runs the figures in one process (indexing in child processes), in this order: encoder (1),
pipeline efficiency and peak memory on the large and small rasters (2 and 4), interleaved rounds
on a medium raster (:mod:`bench.sweep`: the engine under several settings, the in-memory encoder
and the plain user script, for figures 2 and 3), search (5, on the large run's embeddings),
collections of many rasters against one index (6, :mod:`bench.collection`, on the same embeddings),
indexing on a Dask LocalCluster against in-process (7, :mod:`bench.distributed`), the compressed
index at collection scale (8, :mod:`bench.scale`, expanded from figure 5's embeddings), the fixed
cost per raster (9) and an all-nodata raster (10), both in child processes of :mod:`bench.fixed_costs`
(``--baseline COMMIT`` measures 9 before and after). Writes the
run into ``bench/results.json`` under its mode (``default``, ``quick``, ``full``; a run replaces
only the entry of its own mode, atomically) and renders ``BENCHMARKS.md`` from every run there.

Sizes per mode (``PRESETS``) were chosen from measured throughput on the 2-core development
machine so that ``make bench`` stays under 15 minutes (including generating the mosaics on the
first run) and ``make bench-quick`` under 3; ``--full`` runs the sizes the issue names
(20,000 px and 5,000 px rasters, search up to 1,000,000 tiles) and takes much longer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    BENCH_DIR,
    DEFAULT_SHARED,
    DEFAULT_WORK,
    REPO_ROOT,
    atomic_write_json,
    atomic_write_text,
    git_commit,
    load_average,
    machine_description,
)

RESULTS_SCHEMA_VERSION = 1
FIGURES = ("encoder", "pipeline", "script", "search", "collection", "distributed", "scale", "overhead",
           "empty")  # "pipeline" measures figures 2 and 4 together
NEEDS_INPUTS = set(FIGURES) - {"distributed", "overhead", "empty"}  # figures that use the scenes and mosaics


@dataclass(frozen=True)
class Preset:
    large_px: int  # side of the large generated raster (figures 2 and 4)
    small_px: int  # side of the small one (figure 4's comparison)
    medium_px: int  # side of the raster of the interleaved rounds (figures 2 and 3, bench.sweep)
    sweep_rounds: int
    sweep_all: bool  # every engine setting of bench.sweep, not only the defaults
    gdal_variant: bool  # figure 4 again with a small GDAL block cache
    encoder_rounds: int
    encoder_seconds: float  # per case per round
    encoder_extra: bool  # also ORT without spinning, batch 8 and 64
    stage_tiles: int  # tiles timed stage by stage (figure 2)
    script_max_tiles: int
    script_max_seconds: float  # per script variant and round (4 variants)
    search_sizes: list[int] = field(default_factory=list)
    flat_sizes: list[int] = field(default_factory=list)  # exact-search latency sweep
    image_queries: int = 100
    text_queries: int = 100
    search_budget_s: float = 3.0  # per latency measurement
    hnsw_variants: list[tuple[int, int]] = field(default_factory=list)  # (M, efConstruction) at the largest size
    collection_members: list[int] = field(default_factory=list)  # rasters in a collection (figure 6, bench.collection)
    scale_tiles: int = 0  # figure 8: tiles of the compressed index (10M is the size)
    overhead_counts: list[int] = field(default_factory=lambda: [100, 300, 1_000])  # small rasters indexed so far
    overhead_rounds: int = 1
    empty_px: int = 100_000  # side of the all-nodata sparse raster (figure 10)
    empty_before_px: int = 5_000  # the same with every tile read, extrapolated by tile count


PRESETS: dict[str, Preset] = {
    "tiny": Preset(large_px=384, small_px=192, medium_px=192, sweep_rounds=1, sweep_all=False, gdal_variant=False,
                   encoder_rounds=1, encoder_seconds=0.2, encoder_extra=False, stage_tiles=8, script_max_tiles=16,
                   script_max_seconds=5.0, search_sizes=[500, 2_000], flat_sizes=[2_000], image_queries=8,
                   text_queries=8, search_budget_s=0.3, collection_members=[10, 50], scale_tiles=20_000,
                   overhead_counts=[3, 6], empty_px=3_000, empty_before_px=1_000),
    "quick": Preset(large_px=4096, small_px=2048, medium_px=2048, sweep_rounds=1, sweep_all=False,
                    gdal_variant=False, encoder_rounds=2,
                    encoder_seconds=1.0, encoder_extra=False, stage_tiles=64, script_max_tiles=96,
                    script_max_seconds=8.0, search_sizes=[10_000, 30_000], flat_sizes=[10_000, 30_000, 100_000],
                    image_queries=50, text_queries=50, search_budget_s=1.0, collection_members=[100, 1_000],
                    scale_tiles=200_000,
                    overhead_counts=[50, 100],
                    empty_px=20_000, empty_before_px=2_000),
    "default": Preset(large_px=8_192, small_px=2_048, medium_px=4_096, sweep_rounds=2, sweep_all=True,
                      gdal_variant=True, encoder_rounds=3, encoder_seconds=1.5, encoder_extra=True, stage_tiles=128,
                      script_max_tiles=196, script_max_seconds=8.0, search_sizes=[10_000, 100_000],
                      flat_sizes=[10_000, 30_000, 100_000, 300_000, 1_000_000], search_budget_s=2.0,
                      collection_members=[100, 1_000, 10_000], scale_tiles=2_000_000),
    "full": Preset(large_px=20_000, small_px=5_000, medium_px=4_480, sweep_rounds=3, sweep_all=True,
                   gdal_variant=True, encoder_rounds=3, encoder_seconds=3.0, encoder_extra=True, stage_tiles=256,
                   script_max_tiles=400, script_max_seconds=20.0, search_sizes=[10_000, 100_000, 1_000_000],
                   flat_sizes=[10_000, 30_000, 100_000, 300_000, 1_000_000], image_queries=200, text_queries=200,
                   search_budget_s=5.0, hnsw_variants=[(32, 80)], collection_members=[100, 1_000, 10_000],
                   scale_tiles=10_000_000,
                   overhead_counts=[100, 1_000, 3_000],
                   overhead_rounds=2),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of rs_text_search.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="small run (< 3 min)")
    mode.add_argument("--full", action="store_const", dest="mode", const="full",
                      help="the issue's full sizes: 20,000 px raster, search up to 1M tiles (long)")
    mode.add_argument("--tiny", action="store_const", dest="mode", const="tiny", help="seconds; for the smoke test")
    parser.add_argument("--model", default=None, help="model directory or name (default: rs-default, else a stand-in)")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder holding data/scenes")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="generated rasters, stand-in model")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--markdown", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    parser.add_argument("--large-px", type=int, default=None, help="override the large raster's side")
    parser.add_argument("--small-px", type=int, default=None, help="override the small raster's side")
    parser.add_argument("--search-sizes", default=None, help="comma-separated tile counts, e.g. 10000,100000")
    parser.add_argument("--scale-tiles", type=int, default=None, help="tiles of figure 6, e.g. 10000000")
    parser.add_argument("--figures", default=",".join(FIGURES), help=f"subset of {','.join(FIGURES)}")
    parser.add_argument("--baseline", default=None, metavar="COMMIT",
                        help="figure 6 also over this commit's engine, interleaved (before and after)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: redraw the charts and BENCHMARKS.md from the results file")
    parser.set_defaults(mode="default")
    return parser.parse_args(argv)


def _preset(args: argparse.Namespace) -> Preset:
    preset = PRESETS[args.mode]
    if args.large_px:
        preset = replace(preset, large_px=args.large_px)
    if args.small_px:
        preset = replace(preset, small_px=args.small_px)
    if args.search_sizes:
        preset = replace(preset, search_sizes=[int(v) for v in args.search_sizes.split(",") if v])
    if args.scale_tiles:
        preset = replace(preset, scale_tiles=args.scale_tiles)
    return preset


def _load_results(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        if results.get("schema_version") == RESULTS_SCHEMA_VERSION and isinstance(results.get("runs"), dict):
            return results
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    return {"schema_version": RESULTS_SCHEMA_VERSION, "runs": {}}


def _keep_earlier_figures(run: dict[str, Any], earlier: dict[str, Any] | None) -> None:
    """A run of some figures (``--figures``) keeps the other figures of the mode's previous run, saying so."""
    if not earlier or earlier.get("bench_version") != run["bench_version"]:
        return
    kept = {}
    for name, figure in earlier.get("figures", {}).items():
        if name not in run["figures"] and figure is not None:
            run["figures"][name] = figure
            origin = earlier.get("figures_from_earlier", {}).get(name) or {"date": earlier["date"],
                                                                           "commit": earlier["git"].get("commit")}
            kept[name] = origin
    if kept:
        run["figures_from_earlier"] = kept


def _timed(run: dict, name: str, work) -> Any:
    """Run one figure; a failure is recorded in the results (with its traceback) instead of ending the run."""
    started = time.perf_counter()
    print(f"[bench] {name} ...", flush=True)
    try:
        value = work()
    except Exception as exc:  # one broken figure must not lose the others' numbers
        run["errors"][name] = f"{type(exc).__name__}: {exc}"
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        value = None
    run["seconds_per_figure"][name] = round(time.perf_counter() - started, 1)
    print(f"[bench] {name} done in {run['seconds_per_figure'][name]} s", flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        _write_report(_load_results(args.results), args.markdown)
        print(f"[bench] wrote {args.markdown} from {args.results}", flush=True)
        return 0
    preset = _preset(args)
    figures = {f.strip() for f in args.figures.split(",") if f.strip()}
    unknown = figures - set(FIGURES)
    if unknown:
        print(f"unknown figures: {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    if not (args.shared / "data" / "scenes").is_dir():
        print(f"the shared scenes are not at {args.shared / 'data' / 'scenes'} (pass --shared)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    from .report import BENCH_VERSION
    from .standin import resolve_model

    run: dict[str, Any] = {
        "bench_version": BENCH_VERSION,
        "mode": args.mode,
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "make_target": {"default": "make bench", "quick": "make bench-quick"}.get(args.mode),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "git": git_commit(),
        "machine": machine_description(),
        "load_average_start": load_average(),
        "preset": asdict(preset),
        "figures": {},
        "errors": {},
        "seconds_per_figure": {},
    }
    bench_model = _timed(run, "model", lambda: resolve_model(args.model, args.work))
    if bench_model is None:
        return 1
    run["model"] = bench_model.to_dict()
    print(f"[bench] measuring {bench_model.description}", flush=True)
    model_dir = bench_model.directory
    state: dict[str, Any] = {}
    if figures & NEEDS_INPUTS:
        _timed(run, "inputs", lambda: state.update(_inputs(args, preset, model_dir)))
    if "encoder" in figures and "pixels" in state:
        from . import encoder

        run["figures"]["encoder"] = _timed(run, "encoder", lambda: encoder.run(
            model_dir, state["pixels"], preset.encoder_rounds, preset.encoder_seconds, preset.encoder_extra))
    vectors_path = args.work / "vectors-latest.npy"
    if {"pipeline", "script"} & figures and "large" in state:
        from . import pipeline, script, sweep

        models = _timed(run, "encoder sessions", lambda: sweep.encoder_models(model_dir))
        if "pipeline" in figures:
            pair = _timed(run, "pipeline+memory", lambda: pipeline.run(
                model_dir, state["large"], state["small"], args.work, models, preset.encoder_seconds,
                preset.stage_tiles, preset.gdal_variant, vectors_out=vectors_path))
            if pair:
                run["figures"]["pipeline"], run["figures"]["memory"] = pair
        block = _timed(run, "interleaved rounds", lambda: sweep.run(
            state["medium"], model_dir, args.work, models, state["pixels"], preset.sweep_rounds,
            preset.sweep_all and "pipeline" in figures, preset.encoder_seconds, preset.script_max_tiles,
            preset.script_max_seconds))
        if block and "pipeline" in run["figures"]:
            pipeline.add_interleaved(run["figures"]["pipeline"], block)
        if block and "script" in figures:
            run["figures"]["script"] = script.figure(block)
        del models
    if {"search", "scale", "collection"} & figures:
        state["real"] = _timed(run, "real embeddings", lambda: _real_vectors(
            vectors_path, "pipeline" in run["figures"], model_dir, args, state))
    if "search" in figures and state.get("real") is not None:
        from . import search

        run["figures"]["search"] = _timed(run, "search", lambda: search.run(
            model_dir, state["real"], args.shared, preset.search_sizes, preset.flat_sizes, preset.image_queries,
            preset.text_queries, preset.search_budget_s, scenes=state.get("scenes"),
            hnsw_variants=preset.hnsw_variants))
    if "collection" in figures and state.get("real") is not None:
        from . import collection

        run["figures"]["collection"] = _timed(run, "collection", lambda: collection.run(
            model_dir, state["real"], args.shared, args.work, preset.collection_members, preset.text_queries))
    if "distributed" in figures:
        from . import distributed

        run["figures"]["distributed"] = _timed(run, "distributed", lambda: distributed.run(
            model_dir, args.work, preset.small_px, args.shared, state.get("scenes")))
    if "scale" in figures and state.get("real") is not None:
        from . import scale

        run["figures"]["scale"] = _timed(run, "scale", lambda: scale.run(
            model_dir, state["real"], args.shared, preset.scale_tiles, preset.image_queries, preset.text_queries,
            preset.search_budget_s, args.work, scenes=state.get("scenes")))
    if {"overhead", "empty"} & figures:
        from . import fixed_costs

        if "overhead" in figures:
            run["figures"]["overhead"] = _timed(run, "overhead", lambda: fixed_costs.overhead(
                model_dir, args.work, preset.overhead_counts, preset.overhead_rounds, args.baseline))
        if "empty" in figures:
            run["figures"]["empty"] = _timed(run, "empty", lambda: fixed_costs.empty(
                model_dir, args.work, preset.empty_px, preset.empty_before_px))
    run["load_average_end"] = load_average()
    run["git_end"] = git_commit()  # other engineers commit during long runs; children import the newest code
    run["seconds_total"] = round(time.perf_counter() - started, 1)
    results = _load_results(args.results)
    _keep_earlier_figures(run, results["runs"].get(args.mode))
    results["runs"][args.mode] = run
    atomic_write_json(args.results, results)
    _write_report(results, args.markdown)
    print(f"[bench] wrote {args.results} and {args.markdown} in {run['seconds_total']} s", flush=True)
    return 1 if run["errors"] else 0


def _write_report(results: dict[str, Any], markdown: Path) -> None:
    """BENCHMARKS.md and its charts (PNG files in ``bench/figures/`` beside it), from the results of every run."""
    from .charts import draw
    from .report import render

    folder = markdown.parent / "bench" / "figures"
    charts = {mode: {name: path.relative_to(markdown.parent).as_posix() for name, path in
                     draw(run, mode, folder).items()} for mode, run in results["runs"].items()}  # fmt: skip
    atomic_write_text(markdown, render(results, charts))


def _inputs(args: argparse.Namespace, preset: Preset, model_dir: Path) -> dict[str, Any]:
    """Scenes, preprocessed real tiles for the encoder, and the mosaics (generated once)."""
    from rs_text_search.core.model import load_model

    from .rasters import augmented_tiles, ensure_mosaic, load_scenes

    scenes = load_scenes(args.shared)
    model = load_model(model_dir, provider="cpu")
    pixels = model.preprocess(list(augmented_tiles(scenes, 64, model.image_size, seed=7)))
    inputs = {
        "scenes": scenes,
        "pixels": pixels,
        "large": ensure_mosaic(args.work, preset.large_px, scenes),
        "small": ensure_mosaic(args.work, preset.small_px, scenes),
    }
    inputs["medium"] = ensure_mosaic(args.work, preset.medium_px, scenes)
    return inputs


def _real_vectors(path: Path, from_pipeline: bool, model_dir: Path, args, state: dict) -> np.ndarray:
    """The large indexing run's embeddings, or (without that run) embeddings of augmented scene tiles.

    A ``--figures search`` run reuses the embeddings of the mode's previous large indexing run when
    the file still holds them (same model, same tile count), so its search figure measures the
    same vectors as the pipeline figure it keeps.
    """
    if path.is_file() and (from_pipeline or _saved_by_previous_run(path, model_dir, args)):
        return np.load(path)
    from rs_text_search.core.model import load_model

    from .rasters import augmented_tiles, load_scenes

    model = load_model(model_dir, provider="auto")
    scenes = state.get("scenes") or load_scenes(args.shared)
    return model.embed_images(augmented_tiles(scenes, 2048, model.image_size, seed=11))


def _saved_by_previous_run(path: Path, model_dir: Path, args) -> bool:
    earlier = _load_results(args.results)["runs"].get(args.mode) or {}
    indexing = (earlier.get("figures", {}).get("pipeline") or {}).get("indexing") or {}
    same_model = (earlier.get("model") or {}).get("directory") == str(model_dir)
    rows = np.load(path, mmap_mode="r").shape[0]
    return same_model and indexing.get("tiles_embedded") == rows


if __name__ == "__main__":
    sys.exit(main())
