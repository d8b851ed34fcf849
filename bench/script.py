"""Figure 3: the engine versus the obvious user script on the same raster and model.

The script is what an analyst writes from the open_clip README: open the raster with rasterio,
read each tile window, make a PIL image, apply open_clip's evaluation transform (resize,
centre-crop, to-tensor, normalise), run the torch model on it (on CUDA when torch has it) and
collect a numpy array of embeddings. Two variants are timed:

- ``per_tile``: one tile per forward pass (the obvious script; the figure's target is against it);
- ``batched``: the same, but 32 tiles per forward pass (a careful user), reported for honesty;
each with torch's default threads and with one thread (``torch.set_num_threads(1)``, much faster
for one tile at a time on a loaded machine). The speedup is taken against the faster thread
setting of each variant, which is the conservative comparison for the engine.

Both walk the engine's own tile grid in row-major order and stop after ``max_tiles`` tiles or
``max_seconds`` seconds (per-tile cost is steady, so a prefix of the raster measures the rate);
the engine's rate is the end-to-end indexing rate of figure 2 on the same raster.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import ratio, target

SPEEDUP_TARGET = 3.0
SCRIPT_BATCH = 32


def _user_script(raster: Path, tower, image_size: int, mean, std, windows, batch: int,
                 max_seconds: float) -> tuple[int, float]:
    """Run the plain script over ``windows``; returns (tiles embedded, seconds)."""
    import rasterio
    import torch
    from PIL import Image
    from rasterio.windows import Window

    from training._compat import import_open_clip

    open_clip = import_open_clip()
    transform = open_clip.transform.image_transform(image_size, is_train=False, mean=mean, std=std)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # what the user's script would pick
    tower = tower.to(device)
    embeddings: list[np.ndarray] = []
    pending: list[torch.Tensor] = []
    started = time.perf_counter()
    done = 0
    with rasterio.open(raster) as dataset:
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


def run(raster: Path, model_dir: Path, engine_tiles_per_s: float | None, max_tiles: int,
        max_seconds: float) -> dict[str, Any]:
    import torch

    from rs_text_search.core.model import read_manifest
    from rs_text_search.core.sources import RasterioSource
    from rs_text_search.core.tiling import GridSpec, tile_grid

    from .standin import torch_image_tower

    manifest = read_manifest(Path(model_dir), verify_files=False)
    tower, why_not = torch_image_tower(model_dir)
    if tower is None:
        return {"notes": [f"not measured: {why_not}"], "targets": [
            target("engine / per-tile script", None, f">= {SPEEDUP_TARGET}", None)]}
    size = int(manifest["image"]["size"])
    with RasterioSource(raster) as source:
        _, _, tiles = tile_grid(source.width, source.height, GridSpec(tile_size_px=size))
    windows = [t.window for t in tiles[:max_tiles]]
    mean, std = tuple(manifest["image"]["mean"]), tuple(manifest["image"]["std"])
    _user_script(raster, tower, size, mean, std, windows[:2], 1, 60.0)  # warm-up (imports, first forward)
    result: dict[str, Any] = {"raster": str(raster), "engine_tiles_per_s": engine_tiles_per_s, "variants": {}}
    default_threads = torch.get_num_threads()
    try:
        for name, batch in (("per_tile", 1), ("batched", SCRIPT_BATCH)):
            for threads in (default_threads, 1):
                torch.set_num_threads(threads)
                count, seconds = _user_script(raster, tower, size, mean, std, windows, batch, max_seconds)
                key = name if threads == default_threads else f"{name}_1thread"
                result["variants"][key] = {"batch": batch, "torch_threads": threads, "tiles": count,
                                           "seconds": round(seconds, 2), "tiles_per_s": round(count / seconds, 2)}
    finally:
        torch.set_num_threads(default_threads)
    variants = result["variants"]

    def fastest(name: str) -> float:
        return max(v["tiles_per_s"] for k, v in variants.items() if k.startswith(name))

    per_tile = ratio(engine_tiles_per_s, fastest("per_tile"), 2)
    batched = ratio(engine_tiles_per_s, fastest("batched"), 2)
    result["speedup_vs_per_tile"] = per_tile
    result["speedup_vs_batched"] = batched
    result["targets"] = [
        target("engine / per-tile script (its faster thread setting)", per_tile, f">= {SPEEDUP_TARGET}",
               None if per_tile is None else per_tile >= SPEEDUP_TARGET),
        target("engine / batched script (its faster thread setting)", batched, "(reported, no target)", None),
    ]
    return result
