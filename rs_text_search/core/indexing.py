"""Index a raster: plan, run the pipeline (``core.pipeline``), finish; with progress, cancellation and resume.

The tiles of a raster go through ``core.pipeline`` (reader threads -> encoder -> writer thread, one SQLite
transaction per batch, so Ctrl-C or a cancelled task keeps every finished batch). This module decides what
to run: the raster's index folder (its key pins raster file, model and grid), the tiles its catalog already
holds (``plan_index``), the default tile size for the raster's ground resolution (``choose_tile_size``),
and what a finished run leaves (``finish_index``: the faiss index, the counts, the register of superseded
indexes).

Re-indexing an unchanged raster with the same model and grid returns the finished index at once,
unless the index fails its checks (``core.integrity``): then it is rebuilt, embedding again only the
tiles its catalog cannot vouch for, and ``IndexingStats.repaired`` says what was wrong. A run that
stops at an unreadable window leaves nothing behind (every later run would stop there again); a
finished index replaces the indexes of earlier versions of the same file (``scan.remove_superseded``).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .cache import cache_root, index_key, write_failure
from .errors import IndexMismatchError, RasterError
from .index import META_VERSION, STATUS, TileIndex, meta_version
from .integrity import repair_catalog
from .model import Model, manifest_ground_m_per_px
from .pipeline import DEFAULT_READERS, Progress, mark_certainly_empty, one_blas_thread, run_pipeline
from .sources import RasterSource
from .tiling import GridSpec, Tile, matched_tile_px, pixel_ground_m, tile_grid

__all__ = ["build_index", "IndexingStats", "IndexPlan", "plan_index", "finish_index", "index_errors",
           "TileSize", "auto_tile_size", "tile_size_for_ground", "choose_tile_size", "default_grid"]

log = logging.getLogger(__name__)


@dataclass
class IndexingStats:
    tiles_total: int
    tiles_embedded: int
    tiles_skipped_nodata: int
    tiles_skipped_constant: int
    tiles_done_before: int  # already in the catalog when this run started (resume)
    seconds: float
    seconds_encoding: float
    repaired: str | None = None  # what was wrong with the index found on disk (a phrase), None when nothing
    tiles_not_read: int = 0  # of the nodata tiles, those marked from the source's coverage without reading them


class TileSize(NamedTuple):
    """The default tile side for a raster and why: ``far`` when the raster's resolution is so far from
    the training imagery's that the side was clamped (results will be weaker; say so to the user)."""

    px: int
    why: str
    far: bool = False


def auto_tile_size(source: RasterSource, model: Model | dict) -> TileSize:
    """Tile side in raster pixels for ``source``, and one sentence saying why (``tile_size_for_ground``)."""
    ground = pixel_ground_m(source.transform, source.width, source.height, source.to_wgs84)
    return tile_size_for_ground(model, ground, source.name)


def tile_size_for_ground(model: Model | dict, raster_m: float | None, name: str) -> TileSize:
    """Tile side for a raster whose pixels are ``raster_m`` metres on the ground, and why.

    A tile covers the ground one training image covered (``Model.ground_m_per_px`` x its input size),
    so a 1 m orthophoto and a 0.25 m one show a car park at the size the model learned it; without a
    CRS or a recorded training resolution, one raster pixel is one model pixel.
    ``model``: a loaded Model or its manifest (the plugin decides grids before loading ONNX).
    """
    manifest = model if isinstance(model, dict) else model.manifest
    size = int(manifest["image"]["size"])
    model_m = manifest_ground_m_per_px(manifest)
    if model_m is None:
        return TileSize(size, f"{size} px tiles, the model's input size (the model records no training ground "
                              "resolution)")
    if raster_m is None:
        return TileSize(size, f"{size} px tiles, the model's input size ('{name}' has no CRS to measure its pixels)")
    side, clamped = matched_tile_px(size, model_m, raster_m)
    ground = f"{raster_m:.2g} m pixels, {side * raster_m:.0f} m tiles"
    if clamped:
        return TileSize(side, f"{side} px tiles ({ground}): '{name}' is far from the model's training resolution "
                              f"({model_m:.2g} m per input pixel, {size * model_m:.0f} m per image); expect weaker "
                              "results", far=True)
    return TileSize(side, f"{side} px tiles ({ground}), the ground the model's training images covered")


def choose_tile_size(source: RasterSource, model: Model | dict, tile_size_px: int = 0) -> TileSize:
    """The tile side to index ``source`` with, and why: ``tile_size_px`` when given (an option or setting),
    else ``auto_tile_size``."""
    if tile_size_px:
        return TileSize(tile_size_px, f"{tile_size_px} px tiles, as set in the options")
    return auto_tile_size(source, model)


def default_grid(source: RasterSource, model: Model | dict, tile_size_px: int = 0, overlap: float = 0.0) -> GridSpec:
    """The grid of ``choose_tile_size``."""
    return GridSpec(choose_tile_size(source, model, tile_size_px).px, overlap)


def index_folder(source: RasterSource, model: Model, grid: GridSpec, root: Path | None = None) -> Path:
    key = index_key(source.identity(), model.sha256, grid.to_dict())
    return (root or cache_root()) / "indexes" / key


def _new_meta(source: RasterSource, model: Model, grid: GridSpec, key: str, shape: tuple[int, int]) -> dict:
    return {
        "version": META_VERSION,
        "key": key,
        "complete": False,
        "raster": {"uri": source.uri, "name": source.name, "identity": source.identity(),
                   "width": source.width, "height": source.height, "crs_wkt": source.crs_wkt,
                   "transform": list(source.transform)},
        "model": {"name": model.name, "sha256": model.sha256, "embed_dim": model.embed_dim,
                  "image_size": model.image_size},
        "grid": grid.to_dict(),
        "grid_shape": list(shape),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def build_index(
    source: RasterSource,
    model: Model,
    grid: GridSpec | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    batch_size: int | None = None,
    readers: int = DEFAULT_READERS,
) -> tuple[TileIndex, IndexingStats]:
    """Index every tile of ``source`` with ``model``; resumes an interrupted run of the same key.

    grid: None uses ``default_grid`` (tiles covering the ground a training image covered).
    batch_size: tiles per encoder call; None: the model's (``model.BATCH_SIZES`` for its provider).

    Raises ``Cancelled`` when ``is_cancelled()`` turns true (checked once per batch); what was
    finished stays in the catalog. Returns the complete index and what this run did.
    """
    grid = grid or default_grid(source, model)
    batch_size = model.batch_size if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1 tile, got {batch_size}")
    started = time.perf_counter()
    plan = plan_index(source, model, grid, root)
    if plan.index.complete:
        if progress:
            progress(len(plan.tiles), len(plan.tiles))
        return plan.index, plan.stats()
    log.info("indexing %s: %d tiles, %d already done", source.name, len(plan.tiles), len(plan.done))
    # One catalog connection for the run: opening and closing a WAL catalog makes and removes its -wal
    # and -shm files and checkpoints it (four times per raster before: 30 ms of a small raster's cost).
    with index_errors(source, plan.index.directory), closing(plan.index.connect()) as db:
        # The readers' tile resampling is small numpy matrix products; BLAS's own threads would wake for
        # each one and take the cores from the encoder (78 px tiles enlarged to 128 on 2 cores: 124 tiles/s
        # with OpenBLAS's default threads, 250 with one). Process-wide while this runs, then restored.
        todo = plan.todo
        with one_blas_thread():
            to_read = mark_certainly_empty(source, db, todo, len(plan.done), len(plan.tiles), progress, is_cancelled)
            encode_seconds = run_pipeline(source, model, plan.index, to_read, len(plan.tiles) - len(to_read),
                                           len(plan.tiles), progress, is_cancelled, batch_size, readers, db=db)
        plan.index.finalize(db)
    return plan.index, finish_index(source, plan, started, encode_seconds, finalized=True,
                                    not_read=len(todo) - len(to_read))


@dataclass
class IndexPlan:
    """Where a raster's index stands before a run: its folder reopened for writing (``_open_for_indexing``),
    the grid's tiles and those its catalog already holds. Shared by ``build_index`` and ``core.distributed``."""

    index: TileIndex
    tiles: list[Tile]
    done: set[int]
    repaired: str | None

    @property
    def todo(self) -> list[Tile]:
        return [t for t in self.tiles if t.index not in self.done]

    def stats(self, seconds: float = 0.0, encode_seconds: float = 0.0, not_read: int = 0) -> IndexingStats:
        counts = self.index.meta["counts"]
        return IndexingStats(len(self.tiles), counts["embedded"], counts["nodata"], counts["constant"],
                             len(self.done), seconds, encode_seconds, self.repaired, not_read)


def plan_index(source: RasterSource, model: Model, grid: GridSpec, root: Path | None = None) -> IndexPlan:
    """The index of ``source`` ready to be resumed: a complete one (``index.complete``) is returned as it is."""
    folder = index_folder(source, model, grid, root)
    n_rows, n_cols, tiles = tile_grid(source.width, source.height, grid)
    try:
        index, repaired = _open_for_indexing(folder, source, model, grid, (n_rows, n_cols))
        if index.complete:
            return IndexPlan(index, tiles, {t.index for t in tiles}, None)
        done: set[int] = set()
        if (folder / "catalog.sqlite").is_file():  # a first run has no catalog yet: opening one only to find
            with closing(index.connect()) as db:  # it empty cost 3 ms of a small raster's fixed cost
                done = {r[0] for r in db.execute("SELECT id FROM tiles")}
    except (sqlite3.Error, OSError) as exc:
        raise write_failure(f"the index of '{source.name}'", folder, exc) from exc
    return IndexPlan(index, tiles, done, repaired)


@contextmanager
def index_errors(source: RasterSource, folder: Path):
    """Around writing a raster's index: a failed write becomes one sentence (``write_failure``), and a raster
    GDAL cannot read leaves no partial index."""
    try:
        yield
    except RasterError:
        # A window GDAL cannot read (a truncated or damaged file) fails the same way in every run: a partial
        # index would only be re-read up to it each time, so none is kept.
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except (sqlite3.Error, OSError, RuntimeError) as exc:  # faiss reports a failed write as RuntimeError
        raise write_failure(f"the index of '{source.name}'", folder, exc) from exc


def finish_index(source: RasterSource, plan: IndexPlan, started: float, encode_seconds: float,
                 finalized: bool = False, not_read: int = 0) -> IndexingStats:
    """Build the faiss index of a catalog that holds every tile (unless ``finalized`` already), mark it complete
    and replace the indexes of earlier versions of the file; raises RasterError (and keeps nothing) when no tile
    has image content. ``started``: ``time.perf_counter()`` when the run began; ``not_read``: tiles marked
    nodata without being read (``IndexingStats.tiles_not_read``)."""
    index = plan.index
    if not finalized:
        with index_errors(source, index.directory):
            index.finalize()
    if index.meta["counts"]["embedded"] == 0:
        shutil.rmtree(index.directory, ignore_errors=True)  # an index with nothing in it is no use to keep
        raise RasterError(f"'{source.name}' has no tile with image content (all nodata, transparent or constant).")
    from .scan import remove_superseded

    remove_superseded(index)
    return plan.stats(time.perf_counter() - started, encode_seconds, not_read)


def _open_for_indexing(folder: Path, source: RasterSource, model: Model, grid: GridSpec,
                       shape: tuple[int, int]) -> tuple[TileIndex, str | None]:
    """The index folder of this raster, model and grid, ready to resume, and what was repaired in it.

    A finished index that passes the deep checks is returned as it is. Anything else is reopened for
    writing with a fresh meta.json (the folder's key already pins raster, model and grid, so a
    meta.json that is missing or unreadable is simply written again) over a repaired catalog.
    """
    problem = None
    if (folder / "meta.json").is_file():
        try:
            index = TileIndex.open(folder)
            index.check_model(model.sha256)
            if index.meta.get("complete"):  # else an interrupted run, resumed as it is
                problem = index.problem(deep=True, thorough=True)
                if problem is None and "files" in index.meta:
                    return index, None
        except (IndexMismatchError, KeyError, TypeError, AttributeError, ValueError):
            problem = "its meta.json cannot be read"
            if meta_version(folder) not in (None, META_VERSION):  # another version's index: nothing is kept
                shutil.rmtree(folder, ignore_errors=True)
                problem = "it was made by another version of rs_text_search"
    elif (folder / "catalog.sqlite").is_file():
        problem = "its meta.json is missing"
    folder.mkdir(parents=True, exist_ok=True)
    n_tiles = shape[0] * shape[1]
    fixed = repair_catalog(folder / "catalog.sqlite", n_tiles, 4 * model.embed_dim, STATUS)
    index = TileIndex(folder, _new_meta(source, model, grid, folder.name, shape))
    index.write_meta()
    if fixed and (problem is None or problem.startswith("its catalog")):
        problem = fixed  # says the same about the catalog, and what is done about it
    elif fixed:
        problem = f"{problem}, and {fixed}"
    if problem:
        log.info("the index of %s is rebuilt: %s", source.name, problem)
    return index, problem
