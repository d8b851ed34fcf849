"""Index a raster: reader -> mapper -> writer, with progress, cancellation and resume.

- reader (worker threads, one raster handle each): read a batch of windows at the model's input
  size, mark empty tiles (all nodata / fully transparent, or constant), preprocess the rest;
- mapper (calling thread): the image encoder (ONNX Runtime releases the GIL, so reading and
  preprocessing the next batches overlap with encoding this one);
- writer (its own thread, fed through a queue of at most ``WRITE_QUEUE_BATCHES``): one SQLite
  transaction per batch, so Ctrl-C or a cancelled task keeps every finished batch and the next
  run starts after it. Committing batch *n* overlaps encoding batch *n + 1*; the rows (bounds,
  lon/lat corners) are made on the calling thread. Measured as a proposal it reached 0.95
  pipeline efficiency against 0.79 for writing on the encoder's thread in the same interleaved
  rounds; BENCHMARKS.md has the runs since (this figure swings with the shared machine's load).
  Progress is reported, and cancellation checked, on the calling thread.

Tiles the source's ``coverage`` shows to lie wholly in regions without a valid pixel (a sparse GeoTIFF's
unwritten blocks) are written as nodata rows without being read, before the pipeline starts: what reading
them would give, so counts, resume and the integrity checks are as for any other tile.

Re-indexing an unchanged raster with the same model and grid returns the finished index at once,
unless the index fails its checks (``core.integrity``): then it is rebuilt, embedding again only the
tiles its catalog cannot vouch for, and ``IndexingStats.repaired`` says what was wrong. A run that
stops at an unreadable window leaves nothing behind (every later run would stop there again); a
finished index replaces the indexes of earlier versions of the same file (``scan.remove_superseded``).
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .cache import cache_root, index_key, write_failure
from .errors import Cancelled, IndexMismatchError, RasterError
from .index import META_VERSION, STATUS, TileIndex, meta_version
from .integrity import repair_catalog
from .model import Model, manifest_ground_m_per_px
from .sources import RasterSource
from .tiling import GridSpec, Tile, certainly_empty, matched_tile_px, pixel_ground_m, tile_grid, window_bounds

__all__ = ["build_index", "IndexingStats", "IndexPlan", "plan_index", "finish_index", "index_errors",
           "read_tiles", "one_blas_thread", "DEFAULT_READERS", "TileSize", "auto_tile_size", "tile_size_for_ground",
           "choose_tile_size", "default_grid"]

log = logging.getLogger(__name__)

DEFAULT_READERS = 2
WRITE_QUEUE_BATCHES = 2  # batches encoded but not yet written, at most
EMPTY_BATCH_TILES = 4096  # nodata rows per transaction for tiles marked without being read
CONSTANT_TOLERANCE = 1  # a tile whose valid pixels span at most this many grey levels per band is "constant"

Progress = Callable[[int, int], None]  # (tiles done, tiles in the grid)


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


@dataclass
class _Batch:
    tiles: list[Tile]
    status: list[int]
    pixels: np.ndarray | None  # preprocessed, only the tiles with status "embedded" (None: no tile was read)


def _classify(rgb: np.ndarray, valid: np.ndarray) -> int:
    """Embedded, or skipped as nodata / constant.

    Band-major contiguous copy: numpy reduces contiguous rows with SIMD, where ``rgb[valid]`` and
    a 3-byte stride do not (7.9 -> 0.5 ms per 224-px tile, BENCHMARKS.md figure 2).
    """
    if not valid.any():
        return STATUS["nodata"]
    bands = np.ascontiguousarray(rgb.transpose(2, 0, 1)).reshape(rgb.shape[2], -1)
    if not valid.all():
        bands = bands[:, valid.reshape(-1)]
    if int((bands.max(axis=1).astype(int) - bands.min(axis=1)).max()) <= CONSTANT_TOLERANCE:
        return STATUS["constant"]
    return STATUS["embedded"]


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
            to_read = _mark_certainly_empty(source, db, todo, len(plan.done), len(plan.tiles), progress, is_cancelled)
            encode_seconds = _run_pipeline(source, model, plan.index, to_read, len(plan.tiles) - len(to_read),
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


def _mark_certainly_empty(source: RasterSource, db: sqlite3.Connection, todo: list[Tile], n_done: int,
                          n_total: int, progress: Progress | None,
                          is_cancelled: Callable[[], bool] | None) -> list[Tile]:
    """Write as nodata, without reading them, the tiles of ``todo`` in which ``source.coverage()`` shows no
    valid pixel (reading them would find none: ``_classify`` makes such a tile nodata); returns the tiles
    left to read. One transaction per ``EMPTY_BATCH_TILES`` tiles, cancellation checked before each."""
    query = getattr(source, "coverage", None)  # optional: a source without it has every tile read
    coverage = query() if todo and query is not None else None
    empty = certainly_empty(coverage, [t.window for t in todo]) if coverage is not None else None
    if empty is None or not empty.any():
        return todo
    unread = [t for t, is_empty in zip(todo, empty) if is_empty]
    log.info("%s: %d tiles lie where the raster has no valid pixel; marked nodata unread", source.name, len(unread))
    for start in range(0, len(unread), EMPTY_BATCH_TILES):
        if is_cancelled and is_cancelled():
            raise _cancelled(source, n_done + start, n_total)
        chunk = unread[start : start + EMPTY_BATCH_TILES]
        _write_rows(db, _batch_rows(source, _Batch(chunk, [STATUS["nodata"]] * len(chunk), None), None))
        if progress:
            progress(n_done + start + len(chunk), n_total)
    return [t for t, is_empty in zip(todo, empty) if not is_empty]


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once per process: looking them up walks every
    loaded shared library (4 ms per raster, measured over 100 small rasters). Imported here: QGIS loads the
    plugin (which imports this module) before threadpoolctl is installed."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context in which BLAS uses one thread (restored after): the readers' resampling is small matrix products
    whose BLAS threads would take the cores from the encoder. Shared by ``build_index`` and Dask's workers."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _cancelled(source: RasterSource, kept: int, n_total: int) -> Cancelled:
    return Cancelled(f"Indexing of '{source.name}' was cancelled; {kept} of {n_total} tiles are kept and the next "
                     "run resumes from there.")


def _run_pipeline(source, model, index, todo, n_done, n_total, progress, is_cancelled, batch_size, readers, db=None):
    """Read, encode and write ``todo``; returns the seconds spent encoding. ``db``: the run's catalog
    connection, which a single batch is written with on this thread (the writer thread opens its own)."""
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    # One batch leaves nothing to overlap: it is read, encoded and written on this thread with the source
    # itself, sparing the start and join of three threads and a second raster handle (BENCHMARKS.md
    # figure 6: most of the fixed cost of a small raster on a loaded 2-core machine).
    inline = len(batches) <= 1
    local = threading.local()
    handles: list[RasterSource] = []
    handles_lock = threading.Lock()

    def reader() -> RasterSource:
        if inline:
            return source
        if not hasattr(local, "source"):
            local.source = source.clone()
            with handles_lock:
                handles.append(local.source)
        return local.source

    def read_batch(batch_tiles: list[Tile]) -> _Batch:  # on a reader thread, with that thread's handle
        return read_tiles(reader(), model, batch_tiles)

    encode_seconds = 0.0

    def encode(batch: _Batch) -> list[tuple]:
        nonlocal encode_seconds
        tick = time.perf_counter()
        vectors = model.embed_preprocessed(batch.pixels) if len(batch.pixels) else None
        encode_seconds += time.perf_counter() - tick
        return _batch_rows(source, batch, vectors)

    if inline:
        for batch_tiles in batches:
            if is_cancelled and is_cancelled():
                raise _cancelled(source, n_done, n_total)
            rows = encode(read_batch(batch_tiles))
            with closing(index.connect()) if db is None else nullcontext(db) as catalog:
                _write_rows(catalog, rows)
            if progress:
                progress(n_done + len(rows), n_total)
        return encode_seconds

    written = [n_done]
    to_write: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE_BATCHES)
    failure: list[BaseException] = []

    def writer() -> None:
        # Never leaves before the None sentinel, so a full queue cannot block the calling thread.
        db = None
        try:
            db = index.connect()
        except BaseException as exc:  # re-raised on the calling thread
            failure.append(exc)
        while (item := to_write.get()) is not None:
            if failure:
                continue  # drain without writing once a write failed
            try:
                _write_rows(db, item)
                written[0] += len(item)
            except BaseException as exc:
                failure.append(exc)
        if db is not None:
            db.close()

    reported = [n_done]

    def report() -> None:  # on the calling thread: raise the writer's failure, or report new progress
        if failure:
            raise failure[0]
        if progress and written[0] != reported[0]:
            reported[0] = written[0]
            progress(written[0], n_total)

    pool = ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="rs-reader")
    writing = threading.Thread(target=writer, name="rs-writer", daemon=True)
    writing.start()
    pending: deque = deque()
    cancelled = False
    try:
        batch_iter = iter(batches)
        for batch_tiles in batch_iter:  # keep `readers + 1` batches in flight
            pending.append(pool.submit(read_batch, batch_tiles))
            if len(pending) > readers:
                break
        while pending:
            if is_cancelled and is_cancelled():
                cancelled = True
                break
            batch = pending.popleft().result()
            next_tiles = next(batch_iter, None)
            if next_tiles is not None:
                pending.append(pool.submit(read_batch, next_tiles))
            to_write.put(encode(batch))
            report()
    finally:
        to_write.put(None)  # the writer finishes every batch already encoded, then stops
        writing.join()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for handle in handles:
            handle.close()
    report()
    if cancelled:
        raise _cancelled(source, written[0], n_total)
    return encode_seconds


def read_tiles(source: RasterSource, model: Model, tiles: list[Tile]) -> _Batch:
    """Read ``tiles`` at the model's input size, mark the empty ones and preprocess the rest (the mapper's
    input; ``source`` is a handle of the calling thread). A window that cannot be read raises RasterError."""
    status, kept = [], []
    for tile in tiles:
        try:
            rgb, valid = source.read_masked(tile.window, model.image_size)
        except RasterError:
            raise
        except Exception as exc:  # GDAL raises several error types for damaged blocks
            w, reason = tile.window, str(exc.__cause__ or exc).strip().rstrip(".")
            raise RasterError(f"Reading '{source.name}' failed at pixel window x {w.col_off}, y {w.row_off} "
                              f"({w.width} x {w.height} px): {reason}; the file may be truncated or damaged.") \
                from exc
        code = _classify(rgb, valid)
        status.append(code)
        if code == STATUS["embedded"]:
            kept.append(rgb)
    pixels = model.preprocess(kept) if kept else np.zeros((0, 3, model.image_size, model.image_size), np.float32)
    return _Batch(tiles, status, pixels)


def _batch_rows(source: RasterSource, batch: _Batch, vectors: np.ndarray | None) -> list[tuple]:
    """The catalog rows of a batch. Runs on the calling thread: a QGIS source's coordinate
    transform must stay on the thread that uses it (PROJ contexts are per thread)."""
    transform = source.transform
    bounds = [window_bounds(transform, t.window) for t in batch.tiles]
    corners = [None] * len(bounds)
    if source.crs_wkt:
        xs = np.array([[b[0], b[2], b[2], b[0]] for b in bounds]).ravel()
        ys = np.array([[b[3], b[3], b[1], b[1]] for b in bounds]).ravel()
        lonlat = source.to_wgs84(xs, ys)
        if lonlat is not None:
            lon, lat = (np.round(a, 9).reshape(-1, 4) for a in lonlat)
            corners = [json.dumps([[float(x), float(y)] for x, y in zip(lo, la)]) for lo, la in zip(lon, lat)]
    rows, vector_iter = [], iter(vectors if vectors is not None else [])
    for tile, code, box, corner in zip(batch.tiles, batch.status, bounds, corners):
        blob = next(vector_iter).astype(np.float32).tobytes() if code == STATUS["embedded"] else None
        w = tile.window
        rows.append((tile.index, tile.row, tile.col, w.col_off, w.row_off, w.width, w.height, *box, corner, code, blob))
    return rows


def _write_rows(db, rows: list[tuple]) -> None:
    with db:  # one transaction per batch
        db.executemany("INSERT OR REPLACE INTO tiles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
