"""The command line's collection commands: ``index --collection NAME [SOURCE...] [--remove RASTER...]`` and
``list --collections`` (``search``/``similar --collection NAME`` are ``cli._searcher``'s).

Indexing a collection is three steps: expand its sources (``core.collection``), index the rasters that need
it (``cli._index_rasters``, one call over the list of paths), update the collection and build its merged
vector index once (``core.merged``), so its first search does not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .core.collection import Collection, check_name, collections_root, expand_sources, list_collections, source_entry
from .core.errors import CollectionError

__all__ = ["index_collection", "print_collections"]


def _options(args, bands) -> dict:
    return {"tile_size": args.tile_size, "overlap": args.overlap or 0.0, "bands": list(bands) if bands else None}


def _open_or_create(args, model, bands) -> Collection:
    name = check_name(args.collection)
    if not (collections_root() / name / "collection.json").is_file():
        if not args.rasters:
            Collection.load(name)  # raises: there is no such collection
        return Collection(name, {"name": model.name, "sha256": model.sha256}, _options(args, bands))
    collection = Collection.load(name)
    collection.check_model(model.name, model.sha256)
    given = {"tile_size": args.tile_size, "overlap": args.overlap, "bands": list(bands) if bands else None}
    for option, value in given.items():
        if value is not None and value != collection.options.get(option):
            flag = "--" + option.replace("_", "-")
            raise CollectionError(f"The collection '{name}' is indexed with {flag} {collection.options.get(option)}, "
                                  f"not {value}; leave {flag} out, or make another collection.")
    return collection


def index_collection(args, model) -> int:
    """``index --collection NAME [SOURCE...] [--glob G] [--remove RASTER...]``: sync, index, update."""
    from .cli import _bands, _index_rasters, _print_summary
    from .core.merged import MergedIndex

    bands = _bands(args.bands)
    collection = _open_or_create(args, model, bands)
    before = {m["raster"] for m in collection.members}
    sources = [source_entry(path, args.glob) for path in args.rasters]
    if args.glob and not any(Path(s["path"]).is_dir() for s in sources):
        raise CollectionError("--glob picks files in a folder, and none of the sources given is a folder.")
    expand_sources(sources)  # a source that does not exist fails before any work
    collection.add_sources(sources)
    removed = collection.remove(args.remove) if args.remove else []
    kept, todo, warnings = collection.plan_sync()
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    options = collection.options
    bands = tuple(options["bands"]) if options.get("bands") else None
    summary = _index_rasters(args, model, todo, bands, options.get("tile_size"), options.get("overlap") or 0.0,
                             keep_going=True)
    collection.sync_members(kept, [row["index"] for row in summary if "index" in row])
    collection.save()
    members, skipped = collection.member_indexes()
    if len(members) > 1:
        MergedIndex.for_members(members, collection.merged_dir)
    after = {m["raster"] for m in collection.members}
    left = sorted(before - after - {m["raster"] for m in removed})
    if args.json:
        rows = [{**row, "index": str(row["index"].directory)} if "index" in row else row for row in summary]
        print(json.dumps({"collection": collection.name, "rasters": len(collection.members),
                          "tiles": collection.tiles, "indexed": rows, "unchanged": len(kept),
                          "removed": [m["raster"] for m in removed], "left": left}, indent=2))
        return 0
    _print_summary(args, summary)
    for item in skipped:
        print(f"warning: {item.sentence()}", file=sys.stderr)
    embedded = sum("index" in row and row["resumed_from"] < row["tiles"] for row in summary)
    print(f"collection {collection.name}: {len(collection.members)} rasters, {collection.tiles} tiles ({len(kept)} "
          f"unchanged, {embedded} indexed, {sum('index' in row for row in summary) - embedded} found indexed, "
          f"{len(removed)} removed, {len(left)} gone from the sources).")
    return 0


def print_collections(args, model) -> int:
    """``list --collections``: each collection with its model, rasters, tiles and sources."""
    rows = [{"collection": c.name, "model": c.model["name"], "same_model": c.model["sha256"] == model.sha256,
             "rasters": len(c.members), "tiles": c.tiles, "sources": [s["path"] for s in c.sources],
             "updated": c.updated, "folder": str(c.directory)} for c in list_collections()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        other = "" if row["same_model"] else " (not the model in use)"
        print(f"{row['collection']}: {row['rasters']} rasters, {row['tiles']} tiles, model {row['model']}{other}, "
              f"{len(row['sources'])} sources, updated {row['updated']}")
    return 0
