"""Benchmark inputs made from the real scenes: augmented tiles and large mosaicked GeoTIFFs.

The shared scenes (``<shared>/data/scenes/*.tif``, about 1,000 px each) are read once through
the engine's own :class:`~rs_text_search.core.sources.RasterioSource` (it handles their palettes,
alpha bands and nodata). Augmentation: a random crop at a random scale (crop side 0.5x to 1x of
the scene's short side, resampled to the output size), a random multiple of 90 degrees, a random
flip, and colour jitter (brightness, contrast, per-channel gain). Crops are taken only where
at most 1% of the pixels are masked, and the mosaic has no nodata, so no benchmark tile is empty.

``ensure_mosaic`` writes a square GeoTIFF of those patches (tiled 256 x 256, DEFLATE with a
horizontal predictor, like a typical orthophoto delivery) once into the work folder and reuses
it afterwards; the file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MOSAIC_VERSION = "1"  # bump when the recipe changes, so stale mosaics are regenerated
PATCH_PX = 1024  # side of one mosaic patch (a multiple of the 256-pixel block)
BLOCK_PX = 256
JITTER = 0.15  # brightness and contrast factors in 1 +- JITTER
GAIN_JITTER = 0.05  # per-channel gain in 1 +- GAIN_JITTER
# A crop may hold this fraction of masked pixels: the Massachusetts scene marks pure white (255) as
# nodata, so bright roofs would otherwise exclude most of it. The mosaic itself has no nodata.
MAX_INVALID_FRACTION = 0.01


@dataclass
class Scene:
    name: str
    rgb: np.ndarray  # uint8 HxWx3
    valid: np.ndarray  # bool HxW
    # Summed-area table of invalid pixels, to test "every pixel of a crop is valid" in O(1).
    invalid_sat: np.ndarray


def scene_paths(shared: Path) -> list[Path]:
    paths = sorted((Path(shared) / "data" / "scenes").glob("*.tif"))
    if not paths:
        raise FileNotFoundError(f"no scenes found in {Path(shared) / 'data' / 'scenes'}")
    return paths


def load_scenes(shared: Path) -> list[Scene]:
    from rs_text_search.core.sources import RasterioSource
    from rs_text_search.core.tiling import Window

    scenes = []
    for path in scene_paths(shared):
        with RasterioSource(path) as source:
            rgb, valid = source.read_masked(Window(0, 0, source.width, source.height))
        sat = np.pad((~valid).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        scenes.append(Scene(path.stem, rgb, valid, sat))
    return scenes


def _mostly_valid(scene: Scene, row: int, col: int, size: int) -> bool:
    s = scene.invalid_sat
    invalid = int(s[row + size, col + size] - s[row, col + size] - s[row + size, col] + s[row, col])
    return invalid <= MAX_INVALID_FRACTION * size * size


def augmented_patch(scenes: list[Scene], rng: np.random.Generator, out_px: int,
                    min_crop_fraction: float = 0.5) -> np.ndarray:
    """One augmented uint8 ``out_px`` x ``out_px`` x 3 patch from a random scene (see module docstring)."""
    from PIL import Image

    for _ in range(200):
        scene = scenes[int(rng.integers(len(scenes)))]
        height, width = scene.valid.shape
        short = min(height, width)
        size = int(rng.integers(max(8, int(short * min_crop_fraction)), short + 1))
        row, col = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if _mostly_valid(scene, row, col, size):
            break
    else:  # a scene full of nodata would end up here; the shared scenes never do
        raise RuntimeError("could not find a valid crop in the scenes")
    crop = np.ascontiguousarray(scene.rgb[row : row + size, col : col + size])
    image = Image.fromarray(crop).resize((out_px, out_px), Image.BICUBIC)
    turn = int(rng.integers(4))
    if turn:
        image = image.transpose((Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270)[turn - 1])
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    patch = np.asarray(image, dtype=np.float32)
    brightness, contrast = rng.uniform(1 - JITTER, 1 + JITTER, size=2)
    gain = rng.uniform(1 - GAIN_JITTER, 1 + GAIN_JITTER, size=3).astype(np.float32)
    mean = float(patch.mean())
    patch = (patch - mean) * np.float32(contrast) + np.float32(mean)
    patch *= np.float32(brightness) * gain
    return np.ascontiguousarray(np.clip(patch, 0, 255).astype(np.uint8))


def augmented_tiles(scenes: list[Scene], count: int, out_px: int, seed: int) -> np.ndarray:
    """``count`` augmented tiles, uint8 [count, out_px, out_px, 3], at scales from 0.1x to 1x of a scene."""
    rng = np.random.default_rng(seed)
    return np.stack([augmented_patch(scenes, rng, out_px, min_crop_fraction=0.1) for _ in range(count)])


def mosaic_path(work: Path, size_px: int, seed: int = 0) -> Path:
    return Path(work) / "rasters" / f"mosaic_{size_px}px_seed{seed}_v{MOSAIC_VERSION}.tif"


def ensure_mosaic(work: Path, size_px: int, scenes: list[Scene] | None, shared: Path | None = None,
                  seed: int = 0) -> tuple[Path, dict]:
    """The ``size_px`` square mosaic in ``work/rasters`` (generated when missing); returns (path, info)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path = mosaic_path(work, size_px, seed)
    info = {"path": str(path), "size_px": size_px, "generated": False, "generate_seconds": None}
    if not path.is_file():
        started = time.perf_counter()
        if scenes is None:
            scenes = load_scenes(shared)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial.tif")
        rng = np.random.default_rng(seed)
        profile = {
            "driver": "GTiff", "width": size_px, "height": size_px, "count": 3, "dtype": "uint8",
            "crs": "EPSG:26986", "transform": from_origin(200_000.0, 900_000.0, 1.0, 1.0),  # 1 m pixels
            "tiled": True, "blockxsize": BLOCK_PX, "blockysize": BLOCK_PX, "compress": "deflate",
            "predictor": 2, "photometric": "RGB", "interleave": "pixel", "BIGTIFF": "IF_SAFER",
        }  # fmt: skip
        try:
            with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(tmp, "w", **profile) as dst:
                for row_off in range(0, size_px, PATCH_PX):
                    height = min(PATCH_PX, size_px - row_off)
                    strip = np.empty((height, size_px, 3), dtype=np.uint8)
                    for col_off in range(0, size_px, PATCH_PX):
                        width = min(PATCH_PX, size_px - col_off)
                        strip[:, col_off : col_off + width] = augmented_patch(scenes, rng, PATCH_PX)[:height, :width]
                    dst.write(strip.transpose(2, 0, 1), window=Window(0, row_off, size_px, height))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        info.update(generated=True, generate_seconds=round(time.perf_counter() - started, 1))
    info["file_mib"] = round(path.stat().st_size / 2**20, 1)
    info["uncompressed_mib"] = round(size_px * size_px * 3 / 2**20, 1)
    return path, info
