"""``python -m training.scale_check``: retrieval when a caption split's images arrive as tiles of rasters
at other ground resolutions, cut with the engine's automatic tile size or at the model's input size.

    python -m training.scale_check --model resources/models/rs-default \
        --data ../shared/data/ucm_captions/dataset.json --split val --ground-m 0.15 0.3 0.6 1 2 \
        [--image-ground-m 0.3048] [--limit N] [--plot scale.png] [--json]

Each image (``--image-ground-m`` metres per pixel; default: known for UCM- and Sydney-Captions) is
resampled to the raster's resolution the way the engine's raster sources resample (area average when
shrinking, bilinear when enlarging: ``core.resample``). From it one tile, centred, is cut and given to
the engine (ONNX Runtime, the engine's preprocessing and tokenizer):

- ``automatic``: the tile covers the ground one training image covered
  (``core.tiling.matched_tile_px`` with the manifest's ``ground_m_per_px``), what indexing does by default;
- ``input size``: the tile has the model's input side in raster pixels (one raster pixel per model pixel).

A tile larger than the resampled image is the image reflect-padded to that size, a stand-in for the
neighbouring ground a real raster would show. Scores are the published R@1/5/10 and mR
(:func:`training.metrics.evaluate_scores`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rs_text_search.core.resample import resample_band
from rs_text_search.core.tiling import matched_tile_px

from .data import dataset_ground_m, flat_captions, load_image, load_records, spread_subset
from .metrics import evaluate_scores
from .params import USER_ERRORS, ArgumentParser, ParamsError

__all__ = ["scale_check", "main"]

SCHEMES = ("automatic", "input size")


def _resample(rgb: np.ndarray, side: int) -> np.ndarray:
    """uint8 HxWx3 -> side x side, as the raster sources resample (GDAL's rounding of averages)."""
    valid = np.ones(rgb.shape[:2], dtype=bool)
    bands = [resample_band(rgb[..., b].astype(np.float64), valid, side, side)[0] for b in range(3)]
    return np.clip(np.floor(np.stack(bands, axis=-1) + 0.5), 0, 255).astype(np.uint8)


def _centre_tile(raster: np.ndarray, side: int) -> np.ndarray:
    """A side x side tile centred on ``raster``: a crop, or the raster reflect-padded when it is smaller."""
    height, width = raster.shape[:2]
    if side <= min(height, width):
        top, left = (height - side) // 2, (width - side) // 2
        return raster[top : top + side, left : left + side]
    pad_h, pad_w = max(0, side - height), max(0, side - width)
    padded = np.pad(raster, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                    mode="reflect")  # fmt: skip
    return _centre_tile(padded, side)


def scale_check(model_dir: str | Path, data: str | Path, split: str, grounds_m: list[float],
                image_ground_m: float | None = None, images_dir: str | Path | None = None, limit: int = 0,
                provider: str = "cpu") -> dict[str, Any]:
    """mR and recalls per raster ground resolution and tiling scheme; raises ValueError on bad input."""
    from rs_text_search.core.model import load_model

    model = load_model(model_dir, provider=provider)
    if model.ground_m_per_px is None:
        raise ValueError(f"the model '{model.name}' records no ground_m_per_px (export it with --image-ground-m)")
    image_ground_m = image_ground_m or dataset_ground_m(Path(data))
    if not image_ground_m:
        raise ValueError(f"the ground resolution of '{data}' is unknown; pass --image-ground-m")
    records = spread_subset(load_records(Path(data), split, Path(images_dir) if images_dir else None), limit)
    images = [load_image(r.path) for r in records]
    captions, caption_image = flat_captions(records)
    texts = model.embed_texts(captions)
    size = model.image_size
    rows = []
    for ground in grounds_m:
        rasters = [_resample(im, max(8, round(min(im.shape[:2]) * image_ground_m / ground))) for im in images]
        sides = {"automatic": matched_tile_px(size, model.ground_m_per_px, ground)[0], "input size": size}
        for scheme in SCHEMES:
            tiles = np.stack([_resample(_centre_tile(r, sides[scheme]), size) for r in rasters])
            metrics = evaluate_scores(model.embed_images(tiles) @ texts.T, caption_image)
            rows.append({"ground_m": ground, "scheme": scheme, "tile_px": sides[scheme],
                         "tile_m": round(sides[scheme] * ground, 1), **metrics})  # fmt: skip
    return {"model": model.name, "model_ground_m_per_px": model.ground_m_per_px, "image_ground_m": image_ground_m,
            "split": split, "n_images": len(records), "rows": rows}  # fmt: skip


def _plot(result: dict[str, Any], path: Path) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's matplotlib beside the venv's makes Axes3D complain
        warnings.simplefilter("ignore", UserWarning)
        import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    figure, axes = plt.subplots(figsize=(6, 3.6), dpi=120)
    for scheme, style in zip(SCHEMES, ("o-", "s--")):
        rows = [r for r in result["rows"] if r["scheme"] == scheme]
        axes.plot([r["ground_m"] for r in rows], [r["mR"] for r in rows], style, label=f"{scheme} tiles")
    axes.axvline(result["image_ground_m"], color="grey", lw=0.8, ls=":", label="the images' own resolution")
    axes.set_xscale("log")
    grounds = sorted({r["ground_m"] for r in result["rows"]})
    axes.xaxis.set_major_locator(FixedLocator(grounds))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([f"{g:g}" for g in grounds])
    axes.set_xlabel("raster ground resolution (m per pixel)")
    axes.set_ylabel("mR (%)")
    axes.set_title(f"{result['model']} on {result['split']} ({result['n_images']} images)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.scale_check", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported model directory")
    parser.add_argument("--data", required=True, help="Karpathy-style caption JSON or filepath,caption CSV")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", help="image folder (default: images/ beside the JSON)")
    parser.add_argument("--ground-m", type=float, nargs="+", required=True, help="raster resolutions (m per pixel)")
    parser.add_argument("--image-ground-m", type=float, help="metres per pixel of the split's images")
    parser.add_argument("--limit", type=int, default=0, help="N images spread over the split (0: all)")
    parser.add_argument("--provider", choices=["auto", "cuda", "cpu"], default="cpu")
    parser.add_argument("--plot", help="write mR against ground resolution to this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = parser.parse_args(argv)
        if min(args.ground_m) <= 0 or (args.image_ground_m is not None and args.image_ground_m <= 0):
            raise ParamsError("--ground-m and --image-ground-m take positive metres per pixel")
        if args.limit < 0:
            raise ParamsError("--limit must be zero or positive")
        result = scale_check(args.model, args.data, args.split, args.ground_m, args.image_ground_m, args.images,
                             args.limit, args.provider)  # fmt: skip
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        _plot(result, Path(args.plot))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['model']} ({result['model_ground_m_per_px']:.3g} m per input pixel) on {args.split}, "
          f"{result['n_images']} images at {result['image_ground_m']:.3g} m per pixel")
    print(f"{'raster m/px':>11}  {'tiles':<10} {'tile px':>7} {'tile m':>7}  {'R@1 i2t':>7} {'R@1 t2i':>7} {'mR':>6}")
    for r in result["rows"]:
        print(f"{r['ground_m']:>11.3g}  {r['scheme']:<10} {r['tile_px']:>7} {r['tile_m']:>7.0f}  "
              f"{r['i2t_r1']:>7.1f} {r['t2i_r1']:>7.1f} {r['mR']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
