"""Interleaved comparisons on one medium raster: engine settings, the in-memory encoder, the user script.

On a machine shared with other work, the available CPU drifts by a factor of two within minutes,
so numbers measured minutes apart cannot be divided by each other. Here every comparison of
figures 2 and 3 is made in rounds over the same medium raster: in each round every case runs once,
in a fixed order, and the figures use per-case medians over the rounds.

- engine cases: ``build_index`` in a child process (:mod:`bench.index_child`) with the engine's
  defaults or another setting (reader threads, ONNX Runtime intra-op threads, batch size); the
  in-memory encoder with the same ONNX Runtime setting and batch size is timed just before each
  run, and the run's efficiency is taken against it;
- script cases: the obvious user script (:mod:`bench.script`), per tile and batched, with torch's
  default threads and with one thread, over the first tiles of the same raster.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from .common import interleaved_rates, ratio

ENGINE_DEFAULTS = "engine defaults"
# Engine settings beyond the defaults (a full sweep); keys are bench.index_child options.
ENGINE_SETTINGS: list[dict[str, Any]] = [
    {"readers": 1},
    {"threads": 1},
    {"batch_size": 64},
    {"batch_size": 32},
    {"auto_tiles": True},  # other work: tiles of the automatic size (78 px on these 1 m mosaics, enlarged)
]
SCRIPT_VARIANTS = ("per_tile", "per_tile_1thread", "batched", "batched_1thread")


def comparable_engine_cases(cases: dict[str, dict]) -> list[tuple[str, dict]]:
    """Engine cases other than the defaults that index the same tiles (automatic tiles are other work)."""
    return [(name, case) for name, case in cases.items() if case["kind"] == "engine" and name != ENGINE_DEFAULTS
            and not case["options"].get("auto_tiles")]


def setting_name(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or ENGINE_DEFAULTS


def _ort_setting(options: dict[str, Any]) -> str:
    return "1 thread" if options.get("threads") == 1 else "default"


def encoder_models(model_dir: Path) -> dict[str, Any]:
    """The encoder under each ONNX Runtime setting that the engine cases use."""
    from rs_text_search.core.model import load_model

    return {"default": load_model(model_dir, provider="auto", batch_size=1024),
            "1 thread": load_model(model_dir, provider="auto", threads=1, batch_size=1024)}


def encoder_rate(model, pixels: np.ndarray, batch: int, seconds: float) -> float:
    """In-memory tiles/s of ``model`` at ``batch`` (one warm-up call, then ``seconds`` of calls)."""
    chunk = np.ascontiguousarray(np.resize(pixels, (batch, *pixels.shape[1:])))

    def work() -> int:
        model.embed_preprocessed(chunk)
        return batch

    work()
    return interleaved_rates({"encoder": work}, 1, seconds)["encoder"]["per_s"]


def run(raster: tuple[Path, dict], model_dir: Path, work: Path, models: dict[str, Any], pixels: np.ndarray,
        rounds: int, all_settings: bool, encoder_seconds: float, script_max_tiles: int,
        script_max_seconds: float) -> dict[str, Any]:
    """Run every case ``rounds`` times, interleaved; returns per-case rates, efficiencies and medians."""
    from rs_text_search.core.model import BATCH_SIZES

    from . import script
    from .pipeline import index_in_child

    path, info = raster
    settings = [{}] + (ENGINE_SETTINGS if all_settings else [])
    user_script = script.UserScript(path, model_dir, script_max_tiles, script_max_seconds)
    order: list[tuple[str, Any]] = [("engine", settings[0])] + [("script", v) for v in SCRIPT_VARIANTS if
                                                                  user_script.available]
    order += [("engine", options) for options in settings[1:]]
    cases: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for kind, spec in order:
            if kind == "engine":
                name = setting_name(spec)
                case = cases.setdefault(name, {"kind": "engine", "options": spec, "ort": _ort_setting(spec),
                                               "tiles_per_s": [], "encoder_tiles_per_s": [], "efficiency": [],
                                               "peak_rss_mib": []})
                model = models[case["ort"]]
                batch = spec.get("batch_size", BATCH_SIZES[model.provider])
                encoder = encoder_rate(model, pixels, batch, encoder_seconds)
                result = index_in_child(path, model_dir, work, **spec)
                case["tiles_per_s"].append(result["tiles_per_s"])
                case["encoder_tiles_per_s"].append(encoder)
                case["efficiency"].append(ratio(result["tiles_per_s"], encoder))
                case["peak_rss_mib"].append(result["peak_rss_mib"])
                case.setdefault("km2_per_min", []).append(result["km2_per_min"])
                case["tile_px"] = result["tile_px"]
                case["tiles"] = result["tiles_total"]
            else:
                case = cases.setdefault(spec, {"kind": "script", "tiles_per_s": [], "tiles": []})
                count, seconds, threads = user_script.run(spec)
                case["tiles_per_s"].append(round(count / seconds, 2))
                case["tiles"].append(count)
                case["torch_threads"] = threads
    for case in cases.values():
        for key in ("tiles_per_s", "efficiency", "encoder_tiles_per_s", "peak_rss_mib", "km2_per_min"):
            values = [v for v in case.get(key, []) if v is not None]
            if values:
                case[f"{key}_median"] = round(statistics.median(values), 3)
    return {"raster": info, "rounds": rounds, "cases": cases,
            "script_notes": [] if user_script.available else [user_script.why_not]}
