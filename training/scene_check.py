"""``python -m training.scene_check``: do the right tiles light up on the real scenes of ``shared/data``?

    python -m training.scene_check --model resources/models/rs-default --scenes ../shared/data/scenes \
        [--top-k 5] [--plot training/figures/scene_check.png] [--json]

A small hand-made check, not a benchmark: on three shared GeoTIFFs, regions were labelled by eye
(pixel boxes, :data:`LABELS`) as water, parking, houses, forest, fields or a highway. Each scene
is cut with the engine's default grid (tiles covering the ground a training image covered),
every tile is read by the engine's raster source and embedded by the model, and each label's
query (:data:`QUERIES`) ranks the tiles. A tile *hits* when its centre lies in a box of the
label. Reported per (scene, label): the rank of the first hit, whether a hit is in the top k,
and the chance of that for a random ranking (the share of tiles in the boxes). The boxes are
rough (a box of houses holds streets and gardens too), so read the table as a sanity figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .params import USER_ERRORS, ArgumentParser, ParamsError

__all__ = ["LABELS", "QUERIES", "scene_check", "main"]

# label -> the query an analyst would type for it
QUERIES = {
    "water": "a pond or lake",
    "parking": "a parking lot with cars",
    "houses": "houses with gardens and trees",
    "forest": "a dense forest",
    "fields": "farmland with fields",
    "highway": "a highway",
}
# scene file -> label -> boxes (col0, row0, col1, row1) in raster pixels, drawn by eye on the scenes
LABELS: dict[str, dict[str, list[tuple[int, int, int, int]]]] = {
    "massachusetts_22978945_15.tif": {  # 1 m, leaf-off suburb
        "water": [(905, 405, 1000, 525), (730, 85, 800, 190)],
        "parking": [(1000, 640, 1182, 745), (1005, 95, 1085, 145)],
        "houses": [(0, 200, 500, 700), (880, 780, 1182, 901)],
        "forest": [(500, 580, 1000, 780)],
        "highway": [(230, 800, 900, 901), (900, 740, 1182, 800)],
    },
    "naip_m_4709963_se_14_1_20200831.tif": {  # 5 m, prairie potholes and farmland
        "water": [(825, 5, 890, 115), (495, 230, 575, 295), (335, 55, 385, 105), (440, 600, 505, 660),
                  (555, 5, 605, 65), (350, 215, 400, 265), (525, 305, 580, 355), (850, 325, 915, 375),
                  (5, 395, 80, 455), (555, 445, 625, 505), (355, 625, 395, 685), (855, 625, 895, 675)],
        "fields": [(800, 490, 934, 620), (70, 35, 160, 145), (500, 620, 600, 723), (640, 390, 780, 520)],
    },
    "swellendam_3420B_2010_328_RGB_LATLNG.tif": {  # 2.5 m, plantations, dams, a settlement, farmland
        "forest": [(340, 800, 540, 1100), (560, 560, 760, 1000)],
        "water": [(280, 1030, 370, 1170), (430, 250, 530, 340), (640, 1330, 780, 1400)],
        "houses": [(870, 1830, 1098, 1970)],
        "fields": [(800, 2600, 1098, 3039), (820, 1250, 1098, 1450)],
    },
}


def _inside(centres: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    hit = np.zeros(len(centres), dtype=bool)
    for c0, r0, c1, r1 in boxes:
        hit |= (centres[:, 0] >= c0) & (centres[:, 0] < c1) & (centres[:, 1] >= r0) & (centres[:, 1] < r1)
    return hit


def _embed_scene(path: Path, model) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]], str]:
    """Tile embeddings [T, D], tile centres [T, 2] (col, row), windows, and the tile-size sentence."""
    from rs_text_search.core.indexing import choose_tile_size, default_grid
    from rs_text_search.core.sources import open_raster
    from rs_text_search.core.tiling import tile_grid

    with open_raster(path) as source:
        size = choose_tile_size(source, model)
        _, _, tiles = tile_grid(source.width, source.height, default_grid(source, model))
        windows = [(t.window.col_off, t.window.row_off, t.window.width, t.window.height) for t in tiles]
        pixels = [source.read(t.window, model.image_size) for t in tiles]
    centres = np.array([(c + w / 2, r + h / 2) for c, r, w, h in windows])
    return model.embed_images(pixels), centres, windows, size.why


def scene_check(model_dir: str | Path | None, scenes: str | Path, top_k: int = 5) -> dict[str, Any]:
    """Rows per (scene, label) and a summary; scenes missing from the folder are skipped and listed."""
    from rs_text_search.core.model import load_model

    model = load_model(model_dir, provider="cpu")
    rows, missing, drawn = [], [], {}
    for name, labels in LABELS.items():
        path = Path(scenes) / name
        if not path.is_file():
            missing.append(name)
            continue
        emb, centres, windows, why = _embed_scene(path, model)
        queries = model.embed_texts([QUERIES[label] for label in labels])
        drawn[name] = {"windows": windows, "tile_size": why, "top": {}}
        for (label, boxes), query in zip(labels.items(), queries, strict=True):
            hits = _inside(centres, boxes)
            order = np.argsort(-(emb @ query), kind="stable")
            first = int(np.argmax(hits[order])) + 1 if hits.any() else None
            share = float(hits.mean())
            rows.append({"scene": name, "label": label, "query": QUERIES[label], "tiles": len(centres),
                         "first_hit_rank": first, f"hit_at_{top_k}": bool(hits[order[:top_k]].any()),
                         "chance": 1.0 - (1.0 - share) ** top_k})  # fmt: skip
            drawn[name]["top"][label] = [windows[i] for i in order[:top_k]]
    if not rows:
        raise ValueError(f"none of the labelled scenes ({', '.join(LABELS)}) is in '{scenes}'")
    summary = {"hits": sum(r[f"hit_at_{top_k}"] for r in rows), "cases": len(rows),
               "expected_by_chance": round(sum(r["chance"] for r in rows), 2)}  # fmt: skip
    return {"rows": rows, "summary": summary, "missing": missing, "top_k": top_k, "drawn": drawn}


def plot(result: dict[str, Any], scenes: Path, out: Path) -> None:
    """Each scene with its labelled boxes (dashed) and each query's top-k tiles (solid), one colour a label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from rs_text_search.core.sources import open_raster
    from rs_text_search.core.tiling import Window

    colours = dict(zip(QUERIES, ["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#bcbd22", "#9467bd"], strict=True))
    names = list(result["drawn"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 7), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        with open_raster(scenes / name) as source:
            shrink = max(1, max(source.width, source.height) // 1200)
            image = source.read(Window(0, 0, source.width, source.height), None)[::shrink, ::shrink]
        ax.imshow(image, extent=(0, image.shape[1] * shrink, image.shape[0] * shrink, 0))
        for label, boxes in LABELS[name].items():
            for c0, r0, c1, r1 in boxes:
                ax.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, ls="--", lw=1.2, ec=colours[label]))
            for c, r, w, h in result["drawn"][name]["top"].get(label, []):
                ax.add_patch(Rectangle((c, r), w, h, fill=False, lw=2, ec=colours[label]))
        key = f"hit_at_{result['top_k']}"
        verdicts = [f"{r['label']} {'hit' if r[key] else 'miss'}" for r in result["rows"] if r["scene"] == name]
        ax.set_title(f"{name.split('_')[0]}: " + ", ".join(verdicts), fontsize=9)
        ax.set_axis_off()
    handles = [Rectangle((0, 0), 1, 1, fill=False, ec=c, lw=2, label=f"{k}: {QUERIES[k]}") for k, c in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9)
    fig.suptitle(f"top {result['top_k']} tiles per query (solid) and hand-labelled regions (dashed)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.scene_check", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory or name (default: the bundled rs-default)")
    parser.add_argument("--scenes", default="../shared/data/scenes", help="folder holding the shared GeoTIFFs")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--plot", help="write a PNG of the scenes with the top tiles and the labelled regions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = parser.parse_args(argv)
        if args.top_k < 1:
            raise ParamsError("--top-k must be at least 1")
        if not Path(args.scenes).is_dir():
            raise ParamsError(f"scene folder '{args.scenes}' does not exist")
        result = scene_check(args.model, args.scenes, args.top_k)
        if args.plot:
            plot(result, Path(args.scenes), Path(args.plot))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.pop("drawn")
    if args.json:
        print(json.dumps(result))
        return 0
    k = result["top_k"]
    print(f"{'scene':<14} {'label':<8} {'query':<32} {'tiles':>5} {'first hit':>9} {f'hit@{k}':>6} {'chance':>6}")
    for r in result["rows"]:
        hit = "yes" if r[f"hit_at_{k}"] else "no"
        print(f"{r['scene'].split('_')[0]:<14} {r['label']:<8} {r['query']:<32} {r['tiles']:>5} "
              f"{r['first_hit_rank'] or '-':>9} {hit:>6} {r['chance']:>6.2f}")  # fmt: skip
    s = result["summary"]
    print(f"{s['hits']}/{s['cases']} queries put a labelled tile in the top {k} "
          f"(a random ranking: {s['expected_by_chance']:.2f} expected)")  # fmt: skip
    if result["missing"]:
        print(f"not found, skipped: {', '.join(result['missing'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
