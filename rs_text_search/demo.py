"""``make demo``: the main job, headless, on a real scene.

Indexes one raster (``--raster``; else the first of ``../shared/data/scenes/``; else a
georeferenced raster generated here, said plainly), runs a few text queries and one
similar-tile query, prints the top results as tables, writes each result set to a GeoPackage
and draws a map of the matches (PNG). Everything goes to ``demo_output/``; the index cache
there makes a second run instant.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

from .core.errors import RsTextSearchError

QUERIES = ("houses with gardens and trees", "a parking lot with cars", "a road crossing", "a pond or lake",
           "farmland with fields")
REPO = Path(__file__).resolve().parents[1]


def _generated_raster(path: Path) -> Path:
    """A 1,024 x 1,024 px georeferenced RGB scene (EPSG:32633, 1 m) with fields, a road and a lake."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:1024, 0:1024]
    image = np.zeros((1024, 1024, 3), np.float32)
    fields = ((xx // 128 + yy // 160) % 3)[..., None] * np.array([30, 25, 5]) + np.array([90, 120, 60])
    image[:] = fields + rng.normal(0, 8, image.shape)
    image[(np.abs(yy - 0.4 * xx - 300) < 6)] = (150, 150, 150)  # a road
    image[((xx - 700) ** 2 + (yy - 650) ** 2) < 120**2] = (40, 70, 110)  # a lake
    data = np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    profile = dict(driver="GTiff", width=1024, height=1024, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 4000000, 1.0, 1.0), tiled=True, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _pick_raster(raster: str | None, shared: Path, out: Path) -> Path:
    if raster:
        return Path(raster)
    # The data README lists the 1 m Massachusetts orthophoto first: the scene closest to UCM imagery.
    scenes = sorted((shared / "data" / "scenes").glob("*.tif"), key=lambda p: (not p.name.startswith("mass"), p.name))
    if scenes:
        return scenes[0]
    print(f"No raster given and no scenes in {shared / 'data' / 'scenes'}: using a generated one.")
    return _generated_raster(out / "generated_scene.tif")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


def _print_table(title: str, results) -> None:
    print(f"\n{title}")
    print(f"  {'rank':>4}  {'score':>6}  {'tile_id':<22} centre (raster CRS)")
    for r in results:
        cx, cy = (r.bounds[0] + r.bounds[2]) / 2, (r.bounds[1] + r.bounds[3]) / 2
        print(f"  {r.rank:>4}  {r.score:6.3f}  {r.tile_id:<22} {cx:,.1f}, {cy:,.1f}")


def _draw_map(source, result_sets: dict, path: Path) -> None:
    """The scene with each query's top tiles outlined, one colour per query."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's matplotlib beside the venv's makes Axes3D complain
        warnings.simplefilter("ignore", UserWarning)
        import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .core.tiling import Window

    scale = min(1.0, 1400 / max(source.width, source.height))
    overview = source.read(Window(0, 0, source.width, source.height), None) if scale == 1.0 else None
    if overview is None:  # decimated read: the demo never loads a large raster whole
        side = round(max(source.width, source.height) * scale)
        overview = source.read(Window(0, 0, source.width, source.height), side)
    figure, axes = plt.subplots(figsize=(10, 10 * source.height / source.width + 0.6), dpi=110)
    axes.imshow(overview, extent=(0, source.width, source.height, 0))
    colours = plt.cm.tab10.colors
    for colour, (label, results) in zip(colours, result_sets.items()):
        for r in results:
            col, row, w, h = r.window
            axes.add_patch(Rectangle((col, row), w, h, fill=False, lw=2.2, ec=colour))
            axes.text(col + 4, row + 14, str(r.rank), color=colour, fontsize=9, weight="bold")
        axes.plot([], [], color=colour, lw=3, label=label)
    axes.legend(loc="lower left", fontsize=8, framealpha=0.85)
    axes.set_title(f"rs_text_search demo: top tiles per query on {source.name}")
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rs_text_search.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--raster", default=None, help="raster to index (default: the first shared scene)")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"), help="the shared data folder")
    parser.add_argument("--model", default=None, help="model directory or name (default: the bundled model)")
    parser.add_argument("--out", default=str(REPO / "demo_output"), help="where the demo writes its files")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RS_TEXT_SEARCH_CACHE", str(out / "cache"))
    from tqdm import tqdm

    from .core.export import export_geopackage
    from .core.indexing import build_index, choose_tile_size
    from .core.model import load_model
    from .core.search import Searcher
    from .core.sources import open_raster
    from .core.tiling import GridSpec

    try:
        model = load_model(args.model)
        raster = _pick_raster(args.raster, Path(args.shared), out)
        print(f"model: {model.name} ({model.embed_dim}-d, {model.image_size} px input) on {model.provider}")
        print(f"raster: {raster}")
        with open_raster(raster) as source:
            tiles = choose_tile_size(source, model)
            print(f"tiles: {tiles.why}")
            with tqdm(desc="indexing", unit="tile", file=sys.stderr) as bar:
                def progress(done: int, total: int) -> None:
                    bar.total, bar.n = total, done
                    bar.refresh()

                index, stats = build_index(source, model, GridSpec(tiles.px), progress=progress)
            print(f"indexed {stats.tiles_embedded} tiles ({stats.tiles_skipped_nodata} nodata and "
                  f"{stats.tiles_skipped_constant} constant skipped) in {stats.seconds:.1f} s -> {index.directory}")
            searcher = Searcher(model, [index])
            result_sets, files = {}, []
            for query in QUERIES:
                results = searcher.search_text(query, top_k=args.top_k)
                _print_table(f'"{query}"', results)
                result_sets[query] = results
                files.append(export_geopackage(results, out / f"{_slug(query)}.gpkg", query, model.name,
                                               model.sha256))
            example = result_sets[QUERIES[0]][0].tile_id
            similar = searcher.similar([example], top_k=args.top_k)
            label = f"similar to {example}"
            _print_table(f"tiles similar to {example} (the best match for '{QUERIES[0]}')", similar)
            result_sets[label] = similar
            files.append(export_geopackage(similar, out / "similar.gpkg", label, model.name, model.sha256))
            map_path = out / "demo_map.png"
            _draw_map(source, result_sets, map_path)
    except RsTextSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\nfiles written:")
    for path in [*files, map_path]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
