"""What a run's numbers say, as sentences computed from the run (so they stay true when it is re-run).

:func:`findings` returns Markdown bullet points for ``BENCHMARKS.md``: the ratios behind each
figure, where the time and the memory go, and which engine setting the measurements favour.
Every number in a sentence comes from the run itself; nothing here is typed in by hand.
"""

from __future__ import annotations

from typing import Any

from .sweep import ENGINE_DEFAULTS, comparable_engine_cases

LATENCY_BUDGET_MS = 10.0
RECALL_TARGET = 0.95


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _encoder(fig: dict) -> list[str]:
    cpu, ratios = fig["cpu"], fig["ratios"]

    def rate(key: str) -> float | None:
        return cpu.get(key, {}).get("per_s")

    out = []
    if ratios.get("cpu_b32") is not None:
        out.append(f"Encoder: the engine embeds {_n(ratios['cpu_b32'], 2)}x as many tiles/s as torch eager at batch 32 "
                   f"with each library's default threads, {_n(ratios.get('cpu_1thread_b32'), 2)}x with one thread "
                   f"each (batch 1: {_n(ratios.get('cpu_b1'), 2)}x and {_n(ratios.get('cpu_1thread_b1'), 2)}x).")
    if rate("engine_1thread_b32") and rate("engine_b32"):
        out.append(f"ONNX Runtime threads: {_n(rate('engine_b32'))} images/s at batch 32 and "
                   f"{_n(rate('engine_b1'))} at batch 1 with the engine's default threads, "
                   f"{_n(rate('engine_1thread_b32'))} and {_n(rate('engine_1thread_b1'))} with one thread.")
    if rate("engine_b8") and rate("engine_b64"):
        out.append(f"Batch size: {_n(rate('engine_b8'))} images/s at 8, {_n(rate('engine_b32'))} at 32, "
                   f"{_n(rate('engine_b64'))} at 64.")
    return out


def _pipeline(fig: dict) -> list[str]:
    costs = fig["stage_costs_single_thread"]
    out = [f"Pipeline: indexing runs at {_n(fig['efficiency'], 2)} of the in-memory encoder's rate on the large "
           f"raster. Per tile, reading + decoding costs {_n(costs['read_decode_ms'], 2)} ms, the empty/constant test "
           f"{_n(costs['classify_ms'], 2)} ms, preprocessing {_n(costs['preprocess_ms'], 2)} ms and writing to SQLite "
           f"{_n(costs.get('write_ms'), 2)} ms of CPU, against "
           f"{_n(costs['encode_1thread_ms'], 2)} ms to encode on one thread: with every stage on the same cores (and "
           f"an encoder that scaled perfectly with threads) the efficiency could not exceed "
           f"{_n(costs['efficiency_ceiling_cpu_bound'], 2)}."]
    sweep = fig.get("sweep")
    if sweep:
        cases = sweep["cases"]
        defaults = cases.get(ENGINE_DEFAULTS, {})
        others = comparable_engine_cases(cases)
        line = (f"Interleaved rounds ({sweep['raster']['size_px']:,} px raster): engine defaults "
                f"{_n(defaults.get('tiles_per_s_median'))} tiles/s, efficiency "
                f"{_n(defaults.get('efficiency_median'), 2)}")
        if others:
            best, case = max(others, key=lambda item: item[1]["tiles_per_s_median"])
            line += (f"; fastest other setting: {best} at {_n(case['tiles_per_s_median'])} tiles/s (efficiency "
                     f"{_n(case.get('efficiency_median'), 2)} against its own encoder setting)")
        out.append(line + ".")
        auto = next((c for c in cases.values() if c.get("options", {}).get("auto_tiles")), None)
        if auto and defaults.get("km2_per_min_median"):
            out.append(f"With the automatic tile size ({auto.get('tile_px')} px on these 1 m mosaics, each enlarged to "
                       f"the model's input): {_n(auto['tiles_per_s_median'])} tiles/s, efficiency "
                       f"{_n(auto.get('efficiency_median'), 2)}, {_n(auto.get('km2_per_min_median'))} km² per minute "
                       f"against {_n(defaults['km2_per_min_median'])} with tiles of the input size: a tile covers "
                       "the ground a training image covered, so the same area takes more tiles.")
    return out


def _script(fig: dict) -> list[str]:
    if "speedup_vs_per_tile" not in fig:
        return []
    variants = fig["variants"]
    out = [f"Against the obvious script: the engine (defaults) runs at {_n(fig['speedup_vs_per_tile'], 2)}x its "
           f"per-tile rate and {_n(fig['speedup_vs_batched'], 2)}x its batched rate, taking the script's faster torch "
           f"thread setting (per tile with torch's default threads: "
           f"{_n(variants['per_tile']['tiles_per_s_median'])} tiles/s; with one thread: "
           f"{_n(variants.get('per_tile_1thread', {}).get('tiles_per_s_median'))})."]
    if fig.get("best_other"):
        out.append(f"With its fastest other setting ({fig['best_other']['setting']}) the engine runs at "
                   f"{_n(fig.get('speedup_best_other_vs_per_tile'), 2)}x the faster per-tile script.")
    return out


def _memory(fig: dict) -> list[str]:
    runs = fig["runs"]
    large, small = fig["large_raster"]["size_px"], fig["small_raster"]["size_px"]

    def pair(suffix: str) -> str:
        a, b = runs[f"large_{suffix}"], runs[f"small_{suffix}"]
        growth = a["peak_rss_mib"] / b["peak_rss_mib"]
        return (f"{_n(a['peak_rss_mib'])} and {_n(b['peak_rss_mib'])} MiB (x{_n(growth, 2)}; "
                f"{_n(a['tiles_per_s'])} tiles/s on the large raster)")

    engine = runs["large_engine"]
    out = [f"Memory: peak RSS for the {large:,} px and {small:,} px rasters as the engine runs "
           f"(the engine limits GDAL's block cache to {str(engine['gdal_cachemax']).removesuffix(' (engine)')}): "
           f"{pair('engine')}; "
           f"{_n(engine['rss_after_model_load_mib'])} MiB of it is the loaded model."]
    if "large_gdal_default_cache" in runs:
        out.append(f"With GDAL's own default block cache (GDAL_CACHEMAX=5%, 5 % of RAM): {pair('gdal_default_cache')}.")
    small_run = runs["small_engine"]
    if engine.get("peak_rss_before_finalize_mib") and small_run.get("peak_rss_before_finalize_mib"):
        extra_tiles = max(engine["tiles_total"] - small_run["tiles_total"], 1)
        grown = (engine["peak_rss_mib"] - small_run["peak_rss_mib"]) * 1024 / extra_tiles
        before = engine["peak_rss_before_finalize_mib"] - small_run["peak_rss_before_finalize_mib"]
        before = before * 1024 / extra_tiles
        out.append(f"What still grows with the raster is per tile: {_n(grown, 2)} KiB of peak RSS per extra tile "
                   f"({_n(before, 2)} KiB of it reached before finalize builds the faiss index), against "
                   f"{_n(fig.get('embedding_kib'), 2)} KiB for the embedding itself.")
    return out


def _search(fig: dict) -> list[str]:
    if not fig["sizes"]:
        return []
    top = fig["sizes"][-1]
    picked = top[top["engine_picks"]]
    single, default = top["exact"]["p50_ms"], top["exact"].get("p50_ms_faiss_default_threads")
    out = [f"Search at {top['tiles']:,} tiles: the engine picks the {top['engine_picks']} index, p50 "
           f"{_n(picked['p50_ms'], 2)} ms, recall@10 {_n(picked['recall_at_10'], 3)}; exact search takes "
           f"{_n(single, 2)} ms p50 on one faiss thread (as the engine runs one query) and {_n(default, 2)} ms with "
           "faiss's default threads."]
    sweep = fig.get("exact_latency_sweep", [])
    over = [r["tiles"] for r in sweep if (r.get("p50_ms") or 0) > LATENCY_BUDGET_MS]
    if sweep:
        out.append("Exact search stays within "
                   f"{LATENCY_BUDGET_MS:g} ms p50 up to "
                   + (f"{max([r['tiles'] for r in sweep if r['tiles'] < min(over)] or [0]):,} tiles and exceeds it "
                      f"from {min(over):,}" if over else f"{sweep[-1]['tiles']:,} tiles (the largest measured)") + ".")
    good = [r for r in top["ef_sweep"] if r["recall_at_10"] >= RECALL_TARGET]
    by_query = picked.get("recall_at_10_by_query") or top["approximate"].get("recall_at_10_by_query", {})
    out.append(f"HNSW at {top['tiles']:,} tiles: recall@10 {_n(top['approximate']['recall_at_10'], 3)} at efSearch "
               f"{top['approximate']['ef_search']} (image queries {_n(by_query.get('image'), 3)}, text queries "
               f"{_n(by_query.get('text'), 3)}), built in {_n(top['approximate']['build_s'])} s; "
               + (f"efSearch {good[0]['ef_search']} reaches {RECALL_TARGET} at p50 {_n(good[0]['p50_ms'], 2)} ms."
                  if good else f"no efSearch up to {top['ef_sweep'][-1]['ef_search']} reaches {RECALL_TARGET} "
                  f"({_n(top['ef_sweep'][-1]['recall_at_10'], 3)} at p50 {_n(top['ef_sweep'][-1]['p50_ms'], 2)} ms)."))
    real = [s for s in fig["sizes"] if s.get("real_only")]
    if real:
        r = real[-1]["approximate"]
        out.append(f"On the {real[-1]['tiles']:,} real embeddings alone HNSW's recall@10 is {_n(r['recall_at_10'], 3)} "
                   f"(image queries {_n(r['recall_at_10_by_query'].get('image'), 3)}, text queries "
                   f"{_n(r['recall_at_10_by_query'].get('text'), 3)}); the real embeddings' effective dimension is "
                   f"{fig['effective_dimension_real']}.")
    e2e = fig.get("end_to_end_text_query")
    if e2e:
        one = e2e.get("one_thread", {})
        out.append(f"A text query end to end takes {_n(e2e['p50_ms'])} ms p50 (text encoder "
                   f"{_n(e2e['text_encoder_p50_ms'])} ms of it); with a one-thread ONNX Runtime session "
                   f"{_n(one.get('p50_ms'))} ms (text encoder {_n(one.get('text_encoder_p50_ms'))} ms).")
    return out


def _scale(fig: dict) -> list[str]:
    entry, by_query = fig["compressed"], fig["compressed"]["recall_at_10_by_query"]
    good = [r for r in fig["sweep"] if r["recall_at_10_by_query"].get("text", 0) >= RECALL_TARGET
            and r["recall_at_10_by_query"].get("image", 0) >= RECALL_TARGET]
    return [f"Compressed index ({entry['factory']}) at {fig['tiles']:,} tiles: p50 {_n(entry['p50_ms'], 2)} ms, "
            f"recall@10 {_n(entry['recall_at_10'], 3)} (image queries {_n(by_query.get('image'), 3)}, text queries "
            f"{_n(by_query.get('text'), 3)}) at nprobe {entry['nprobe']}; {_n(entry['bytes_per_tile'], 0)} bytes per "
            f"tile ({_n(entry['bytes_per_tile'] * 1e7 / 2**30)} GiB at 10M tiles); trained in "
            f"{_n(entry['train_s'])} s, filled in {_n(entry['add_s'])} s; the engine picks {fig['engine']['picks']} "
            "at this size. "
            + (f"Both query kinds reach {RECALL_TARGET} from nprobe {good[0]['nprobe']} (p50 "
               f"{_n(good[0]['p50_ms'], 2)} ms)." if good else f"No nprobe measured reaches {RECALL_TARGET} for "
               "both query kinds.")]


def findings(run: dict[str, Any]) -> list[str]:
    figures = run["figures"]
    out: list[str] = []
    for name, summarise in (("encoder", _encoder), ("pipeline", _pipeline), ("script", _script),
                            ("memory", _memory), ("search", _search), ("scale", _scale)):
        if figures.get(name):
            try:
                out += summarise(figures[name])
            except (KeyError, TypeError, ValueError) as exc:  # a partial figure: say so, keep the rest
                out.append(f"({name}: no summary, {type(exc).__name__}: {exc})")
    if run["model"].get("stand_in"):
        out.append("The model is a stand-in with random image weights: speed figures hold for any model of its size, "
                   "but search recall depends on the embeddings (a trained model's are higher-dimensional, and its "
                   "text queries land near matching images instead of nowhere in particular); re-run with "
                   "`--model <dir>` once a trained model exists.")
    return [f"- {line}" for line in out] + [""]
