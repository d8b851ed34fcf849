"""The command line over the engine: ``python -m rs_text_search index|search|similar|list``.

Shares the on-disk cache with the QGIS plugin. Bad input, argument errors included, gets one sentence
on stderr and exit code 2; GDAL's own messages and library warnings are shown only with ``-v``.
Ctrl-C while indexing keeps every finished batch (exit code 130) and the next run resumes; ``index
--workers N`` / ``--scheduler ADDRESS`` index on Dask (``core.distributed``), into the same cache. A
search says on stderr, one line each, which indexes it skips and why (damaged, unfinished, or of
a raster file that changed or moved); the next ``index`` of such a raster rebuilds its index.
``index --collection NAME`` expands the sources, indexes the rasters that need it (one call,
``_index_rasters``) and updates the collection (``core.collection``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .core.errors import Cancelled, QueryError, RsTextSearchError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line ("error: argument --top-k: ...") and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help').\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"takes a finite number, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m rs_text_search",
                     description="Natural-language search over remote-sensing rasters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    commands = parser.add_subparsers(dest="command", required=True)

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default=None, help="model directory or name (default: the bundled model)")
    model.add_argument("--provider", choices=("auto", "cuda", "cpu"), default="auto",
                       help="ONNX Runtime execution provider (auto: CUDA when it works, else CPU)")
    model.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    index = commands.add_parser("index", parents=[model], help="cut rasters into tiles and embed them")
    index.add_argument("rasters", nargs="*", metavar="RASTER",
                       help="raster files; with --collection also folders, VRTs and text files listing paths")
    index.add_argument("--collection", default=None, metavar="NAME",
                       help="add the sources to this collection (alone: re-sync it with its sources)")
    index.add_argument("--glob", default=None, help="the files of a folder source (default: *.tif, *.tiff, *.jp2, "
                                                    "*.img at any depth)")
    index.add_argument("--remove", nargs="+", default=[], metavar="RASTER", help="leave rasters out of --collection")
    index.add_argument("--tile-size", type=_positive_int, default=None,
                       help="tile side in raster pixels (default: the ground one training image covered)")
    index.add_argument("--overlap", type=_finite_float, default=None, help="fraction of a tile shared by neighbours")
    index.add_argument("--bands", default=None, help="bands to use, e.g. 1,2,3 or 4 (default: RGB or grey)")
    index.add_argument("--batch-size", type=_positive_int, default=None,
                       help="tiles per encoder call (default: 16 on CPU, 64 on CUDA)")
    dask = index.add_mutually_exclusive_group()
    dask.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                      help="index on N worker processes of an embedded Dask cluster (needs dask[distributed])")
    dask.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="index on a running Dask cluster, e.g. tcp://host:8786 (its workers need the rasters "
                           "and the model folder at the same paths)")

    query = argparse.ArgumentParser(add_help=False)
    query.add_argument("--raster", action="append", default=[], help="search only this raster (repeatable)")
    query.add_argument("--collection", default=None, metavar="NAME", help="search only this collection's rasters")
    query.add_argument("--top-k", type=_positive_int, default=10)
    query.add_argument("--min-score", type=_finite_float, default=None)
    query.add_argument("--bbox", type=_finite_float, nargs=4, metavar=("MINX", "MINY", "MAXX", "MAXY"), default=None)
    query.add_argument("--crs", default=None, help="CRS of --bbox and --at, e.g. EPSG:4326 (default: raster's)")
    query.add_argument("--rerank", action="store_true", help="re-rank with query expansion")
    query.add_argument("--out", default=None, help="write the results to this GeoPackage (.gpkg)")
    query.add_argument("--not", dest="negative_texts", action="append", default=[], metavar="TEXT",
                       help="text to steer away from (repeatable)")
    query.add_argument("--not-tile", dest="negative_tiles", action="append", default=[], metavar="ID",
                       help="tile to steer away from (repeatable)")

    search = commands.add_parser("search", parents=[model, query], help="find tiles matching a text")
    search.add_argument("text", nargs="+", help="what to look for (several texts are combined)")

    similar = commands.add_parser("similar", parents=[model, query], help="find tiles like example tiles")
    where = similar.add_mutually_exclusive_group(required=True)
    where.add_argument("--tile", action="append", metavar="ID", help="example tile id (repeatable)")
    where.add_argument("--at", type=_finite_float, nargs=2, metavar=("X", "Y"), help="the tile under this point")

    listing = commands.add_parser("list", parents=[model], help="list the indexed rasters for the model")
    listing.add_argument("--collections", action="store_true", help="list the collections instead")
    return parser


def _bands(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise RsTextSearchError(f"--bands takes band numbers separated by commas, not '{text}'.") from None


def _index(args, model) -> int:
    from .core.cache import cache_root
    from .core.tiling import GridSpec

    GridSpec(args.tile_size or 8, args.overlap or 0.0)  # bad --tile-size / --overlap fail before any work
    cache_root()  # and a cache folder that cannot be made
    if args.collection is not None:
        from .collection_cli import index_collection

        return index_collection(args, model)
    if args.glob or args.remove:
        raise RsTextSearchError(f"--{'glob' if args.glob else 'remove'} works with --collection NAME only.")
    if not args.rasters:
        raise RsTextSearchError("Name at least one raster to index (or a collection with --collection NAME).")
    summary = _index_rasters(args, model, args.rasters, _bands(args.bands), args.tile_size, args.overlap or 0.0)
    _print_summary(args, summary)
    return 0


DASK_GROUP_RASTERS = 256  # rasters open at once on the Dask path (file handles), one group after the other


def _index_rasters(args, model, rasters: Sequence, bands, tile_size: int | None, overlap: float,
                   keep_going: bool = False) -> list[dict]:
    """Index rasters (in process one after the other, or on Dask with --workers / --scheduler, a group of
    ``DASK_GROUP_RASTERS`` at a time on one cluster); a summary row per raster (``index``: its TileIndex).

    keep_going: a raster that cannot be opened or indexed (not a raster, no image content) gets a warning line
    and a row with ``error`` instead of ending the run (a collection's thousands of files); else every raster
    is opened before any work and the first failure ends the run.
    """
    from contextlib import nullcontext

    from tqdm import tqdm

    from .core.errors import RasterError
    from .core.indexing import build_index, choose_tile_size
    from .core.sources import open_raster
    from .core.tiling import GridSpec

    def grid_of(source) -> GridSpec:
        if source.crs_wkt is None:  # said before the progress bar starts, so the two do not share a line
            print(f"note: '{source.name}' has no CRS; its tiles are located in pixel coordinates.", file=sys.stderr)
        tiles = choose_tile_size(source, model, tile_size or 0)
        if not tile_size and not args.json:  # the automatic size is said; a given one is known
            print(f"{source.name}: {tiles.why}.", file=sys.stderr)
        return GridSpec(tiles.px, overlap)

    def bar_progress(bar):
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()
        return progress

    summary = []

    def failed(path, exc: RasterError) -> None:
        if not keep_going:
            raise exc
        print(f"warning: skipping '{path}': {exc}", file=sys.stderr)
        summary.append({"raster": str(path), "error": str(exc)})

    def done(source, index, stats) -> None:
        if stats.repaired:
            print(f"note: the index of '{source.name}' was rebuilt ({stats.repaired}).", file=sys.stderr)
        summary.append({"raster": source.uri, "index": index, "tile_px": index.meta["grid"]["tile_size_px"],
                        "repaired": stats.repaired, "tiles": stats.tiles_total,
                        "embedded": stats.tiles_embedded, "skipped_nodata": stats.tiles_skipped_nodata,
                        "skipped_constant": stats.tiles_skipped_constant, "resumed_from": stats.tiles_done_before,
                        "seconds": round(stats.seconds, 2)})

    sources = [] if keep_going else [open_raster(path, bands) for path in rasters]  # fail fast before any work
    on_dask = bool(args.workers or args.scheduler)
    if on_dask:
        from .core.distributed import build_indexes, dask_cluster
    with dask_cluster(args.workers, args.scheduler) if on_dask else nullcontext() as cluster:
        group = DASK_GROUP_RASTERS if on_dask else 1
        for start in range(0, len(rasters), group):
            opened = []
            for number in range(start, min(start + group, len(rasters))):
                try:
                    opened.append(sources[number] if sources else open_raster(rasters[number], bands))
                except RasterError as exc:
                    failed(rasters[number], exc)
            if not on_dask:
                for source in opened:
                    try:
                        grid = grid_of(source)
                        with source, tqdm(desc=source.name, unit="tile", disable=args.json, file=sys.stderr) as bar:
                            done(source, *build_index(source, model, grid, progress=bar_progress(bar),
                                                      batch_size=args.batch_size))
                    except RasterError as exc:
                        failed(source.uri, exc)
                continue
            try:
                jobs = [(source, grid_of(source)) for source in opened]
                with tqdm(desc=f"{len(jobs)} rasters on Dask", unit="tile", disable=args.json,
                          file=sys.stderr) as bar:
                    results = build_indexes(jobs, model, cluster, progress=bar_progress(bar), provider=args.provider,
                                            batch_size=args.batch_size,
                                            failed=lambda number, exc, jobs=jobs: failed(jobs[number][0].uri, exc))
                for source, result in zip(opened, results):
                    if result is not None:  # else said by failed()
                        done(source, *result)
            finally:
                for source in opened:
                    source.close()
    return summary


def _print_summary(args, summary: list[dict]) -> None:
    rows = [{**row, "index": str(row["index"].directory)} for row in summary if "index" in row]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{Path(row['raster']).name}: {row['embedded']} tiles embedded, {row['skipped_nodata']} nodata "
              f"and {row['skipped_constant']} constant skipped ({row['seconds']} s) -> {row['index']}")



def _searcher(args, model):
    """A Searcher over this model's usable indexes; one warning line on stderr for each skipped one."""
    from .core.scan import scan_indexes
    from .core.search import Searcher

    merged_dir = None
    if args.collection is not None:
        from .core.collection import Collection

        collection = Collection.load(args.collection)
        collection.check_model(model.name, model.sha256)
        indexes, skipped = collection.member_indexes()
        merged_dir = collection.merged_dir
        if not indexes and not skipped:
            raise QueryError(f"The collection '{collection.name}' has no raster yet; add some with 'index "
                             f"--collection {collection.name} SOURCE...'.")
    else:
        indexes, skipped = scan_indexes(model_sha256=model.sha256, deep=True, check_rasters=True)
    if args.raster:
        wanted = {str(Path(r).resolve()) for r in args.raster}
        indexes = [i for i in indexes if str(Path(i.raster_uri).resolve()) in wanted]
        skipped = [s for s in skipped if s.raster_uri is None or str(Path(s.raster_uri).resolve()) in wanted]
    if not indexes and skipped:
        first = skipped[0]
        more = f" ({len(skipped) - 1} more skipped with it)" if len(skipped) > 1 else ""
        raise QueryError(f"Nothing can be searched: {first.what} cannot be used{more}, {first.reason}.")
    for item in skipped:
        print(f"warning: {item.sentence()}", file=sys.stderr)
    if args.raster and not indexes:
        raise QueryError("None of the --raster files is indexed with this model; run 'index' first.")
    if not indexes:
        from .core.index import list_indexes

        if any(i.meta["model"]["name"] == model.name for i in list_indexes()):
            raise QueryError(f"Model '{model.name}' has changed since the rasters were indexed (its weights are not "
                             "those the indexes were made with); index them again with this model.")
        raise QueryError(f"Nothing is indexed with model '{model.name}' yet; run 'python -m rs_text_search index "
                         "RASTER' first.")
    return Searcher(model, indexes, merged_dir=merged_dir)


def _check_query(args, model) -> None:
    """Bad --crs, --bbox or --out fail before any searching; words the model does not know are a warning."""
    from .core.search import check_bbox, check_crs

    if args.crs:
        check_crs(args.crs)
    if args.bbox:
        check_bbox(args.bbox, args.crs)
    if args.out:
        from .core.export import check_export_target

        check_export_target(args.out)
    for text in ([" ".join(args.text)] if args.command == "search" else []) + args.negative_texts:
        if text.strip() and not model.knows_words(text):
            print(f"warning: model '{model.name}' knows none of the words in {text!r}; its ranking means little.",
                  file=sys.stderr)


def _query(args, model) -> int:
    _check_query(args, model)
    searcher = _searcher(args, model)
    if args.command == "search":
        texts, tiles, label = [" ".join(args.text)], [], " ".join(args.text)
    else:
        tiles = args.tile or [searcher.tile_at(args.at[0], args.at[1], args.crs)]
        texts, label = [], "similar to " + ", ".join(tiles)
    results = searcher.search(texts=texts, tiles=tiles, negative_texts=args.negative_texts,
                              negative_tiles=args.negative_tiles, top_k=args.top_k, min_score=args.min_score,
                              bbox=tuple(args.bbox) if args.bbox else None, bbox_crs=args.crs, rerank=args.rerank)
    if not results and args.bbox:
        box, crs = " ".join(f"{v:g}" for v in args.bbox), args.crs or "the rasters' own CRS"
        print(f"warning: no indexed tile lies inside the --bbox {box} (in {crs}); check its coordinates and --crs.",
              file=sys.stderr)
    if args.out:
        from .core.export import export_geopackage

        export_geopackage(results, args.out, label, model.name, model.sha256)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return 0
    print(f"{len(results)} results for: {label}  (model {model.name}, {model.provider})")
    print(f"{'rank':>4}  {'score':>6}  {'tile_id':<24} {'raster':<32} centre (raster CRS)")
    for r in results:
        cx, cy = (r.bounds[0] + r.bounds[2]) / 2, (r.bounds[1] + r.bounds[3]) / 2
        print(f"{r.rank:>4}  {r.score:6.3f}  {r.tile_id:<24} {r.raster_name[:32]:<32} {cx:.2f}, {cy:.2f}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _list(args, model) -> int:
    from .core.scan import scan_indexes

    if args.collections:
        from .collection_cli import print_collections

        return print_collections(args, model)

    indexes, skipped = scan_indexes(model_sha256=model.sha256, check_rasters=True)  # what a search would skip
    for item in skipped:
        print(f"warning: {item.sentence()}", file=sys.stderr)
    rows = [{"raster": i.raster_uri, "tiles": i.meta.get("counts", {}).get("embedded"), "grid": i.meta["grid"],
             "index": str(i.directory)} for i in indexes]
    if args.json:
        print(json.dumps(rows, indent=2))
    for row in [] if args.json else rows:
        print(f"{row['raster']}: {row['tiles']} tiles, tile {row['grid']['tile_size_px']} px -> {row['index']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (one line, code 2) or --help (code 0)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.captureWarnings(True)
    if not args.verbose:  # GDAL's messages (38 of them for a truncated TIFF) and library warnings: only with -v
        for name in ("rasterio", "py.warnings"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")  # read when --workers imports dask
    try:
        from .core.model import load_model

        model = load_model(args.model, provider=args.provider)
        if args.command == "index":
            return _index(args, model)
        if args.command == "list":
            return _list(args, model)
        return _query(args, model)
    except Cancelled as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if args.command == "index":
            print("Interrupted; every finished batch is kept and the next run resumes from there.", file=sys.stderr)
        else:
            print("Interrupted.", file=sys.stderr)
        return 130
    except (RsTextSearchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
