"""Figure 3: the engine versus the obvious user script on the same raster and model.

The script is what an analyst writes from the open_clip README: open the raster with rasterio,
read each tile window, make a PIL image, apply open_clip's evaluation transform (resize,
centre-crop, to-tensor, normalise), run the torch model on it (on CUDA when torch has it) and
collect a numpy array of embeddings. Four variants are timed:

- ``per_tile``: one tile per forward pass (the obvious script; the figure's target is against it);
- ``batched``: 32 tiles per forward pass (a careful user), reported for honesty;
each with torch's default threads and with one thread (``torch.set_num_threads(1)``, much faster
for one tile at a time on a loaded machine). The speedup is taken against the faster thread
setting of each variant, which is the conservative comparison for the engine.

The script walks the engine's own tile grid in row-major order and stops after ``max_tiles``
tiles or ``max_seconds`` seconds (its per-tile cost is steady). Script and engine runs are
interleaved in rounds on the same raster by :mod:`bench.sweep`; this module turns those rounds
into the figure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import ratio, target
from .sweep import comparable_engine_cases

SPEEDUP_TARGET = 3.0
SCRIPT_BATCH = 32


class UserScript:
    """The plain script over one raster; ``run(variant)`` returns (tiles embedded, seconds, torch threads)."""

    def __init__(self, raster: Path, model_dir: Path, max_tiles: int, max_seconds: float) -> None:
        from rs_text_search.core.model import read_manifest
        from rs_text_search.core.sources import RasterioSource
        from rs_text_search.core.tiling import GridSpec, tile_grid

        from .standin import torch_image_tower

        self.raster, self.max_seconds = Path(raster), max_seconds
        self.tower, self.why_not = torch_image_tower(model_dir)
        self.available = self.tower is not None
        if not self.available:
            self.why_not = f"user script not measured: {self.why_not}"
            return
        import torch

        self.default_threads = torch.get_num_threads()
        manifest = read_manifest(Path(model_dir), verify_files=False)
        self.size = int(manifest["image"]["size"])
        self.mean, self.std = tuple(manifest["image"]["mean"]), tuple(manifest["image"]["std"])
        with RasterioSource(raster) as source:
            _, _, tiles = tile_grid(source.width, source.height, GridSpec(tile_size_px=self.size))
        self.windows = [t.window for t in tiles[:max_tiles]]
        self._script(self.windows[:2], 1, 60.0)  # warm-up: imports, first forward pass

    def run(self, variant: str) -> tuple[int, float, int]:
        import torch

        threads = 1 if variant.endswith("_1thread") else self.default_threads
        batch = SCRIPT_BATCH if variant.startswith("batched") else 1
        torch.set_num_threads(threads)
        try:
            count, seconds = self._script(self.windows, batch, self.max_seconds)
        finally:
            torch.set_num_threads(self.default_threads)
        return count, seconds, threads

    def _script(self, windows, batch: int, max_seconds: float) -> tuple[int, float]:
        """The user's script, as they would write it; returns (tiles embedded, seconds)."""
        import rasterio
        import torch
        from PIL import Image
        from rasterio.windows import Window

        from training._compat import import_open_clip

        open_clip = import_open_clip()
        transform = open_clip.transform.image_transform(self.size, is_train=False, mean=self.mean, std=self.std)
        device = "cuda" if torch.cuda.is_available() else "cpu"  # what the user's script would pick
        tower = self.tower.to(device)
        embeddings: list[np.ndarray] = []
        pending: list[torch.Tensor] = []
        started = time.perf_counter()
        done = 0
        with rasterio.open(self.raster) as dataset:
            for window in windows:
                pixels = dataset.read([1, 2, 3], window=Window(window.col_off, window.row_off, window.width,
                                                               window.height))
                pending.append(transform(Image.fromarray(np.moveaxis(pixels, 0, -1))))
                if len(pending) == batch:
                    with torch.no_grad():
                        embeddings.append(tower(torch.stack(pending).to(device)).cpu().numpy())
                    done += len(pending)
                    pending = []
                    if time.perf_counter() - started > max_seconds:
                        break
            if pending:
                with torch.no_grad():
                    embeddings.append(tower(torch.stack(pending).to(device)).cpu().numpy())
                done += len(pending)
        np.concatenate(embeddings)  # the script's output: an [N, D] array
        return done, time.perf_counter() - started


def figure(block: dict[str, Any]) -> dict[str, Any]:
    """Figure 3 from the interleaved rounds of :func:`bench.sweep.run`."""
    cases = block["cases"]
    engine = cases["engine defaults"].get("tiles_per_s_median")
    scripts = {name: case for name, case in cases.items() if case["kind"] == "script"}
    result: dict[str, Any] = {"raster": block["raster"], "rounds": block["rounds"], "engine_tiles_per_s": engine,
                              "notes": list(block.get("script_notes", [])), "variants": {}}
    for name, case in scripts.items():
        result["variants"][name] = {"batch": SCRIPT_BATCH if name.startswith("batched") else 1,
                                    "torch_threads": case.get("torch_threads"), "tiles": case["tiles"],
                                    "tiles_per_s": case["tiles_per_s"],
                                    "tiles_per_s_median": case["tiles_per_s_median"]}
    if not scripts:
        result["targets"] = [target("engine / per-tile script", None, f">= {SPEEDUP_TARGET}", None)]
        return result

    def fastest(prefix: str) -> float:
        return max(v["tiles_per_s_median"] for k, v in result["variants"].items() if k.startswith(prefix))

    per_tile, batched = ratio(engine, fastest("per_tile"), 2), ratio(engine, fastest("batched"), 2)
    result["speedup_vs_per_tile"], result["speedup_vs_batched"] = per_tile, batched
    result["targets"] = [
        target("engine / per-tile script (its faster thread setting)", per_tile, f">= {SPEEDUP_TARGET}",
               None if per_tile is None else per_tile >= SPEEDUP_TARGET),
        target("engine / batched script (its faster thread setting)", batched, "(reported, no target)", None),
    ]
    others = comparable_engine_cases(cases)
    if others:
        name, best = max(others, key=lambda item: item[1]["tiles_per_s_median"])
        result["best_other"] = {"setting": name, "tiles_per_s": best["tiles_per_s_median"]}
        value = ratio(best["tiles_per_s_median"], fastest("per_tile"), 2)
        result["speedup_best_other_vs_per_tile"] = value
        result["targets"].append(target(f"same, engine with its fastest other setting ({name})", value,
                                        f">= {SPEEDUP_TARGET}", None if value is None else value >= SPEEDUP_TARGET))
    return result
