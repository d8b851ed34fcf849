"""One raster's tiles through reader -> mapper -> writer: the indexing pipeline of ``core.indexing``.

- reader (worker threads, one raster handle each): read a batch of windows at the model's input
  size, mark empty tiles (all nodata / fully transparent, or constant: ``classify``), preprocess the rest;
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
unwritten blocks) are written as nodata rows without being read, before the pipeline starts
(``mark_certainly_empty``): what reading them would give, so counts, resume and the integrity checks are
as for any other tile. ``core.distributed`` runs the same reading (``read_tiles``) on Dask workers and
the same rows (``batch_rows``, ``write_rows``) in its client.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import dataclass

import numpy as np

from .errors import Cancelled, RasterError
from .index import STATUS
from .model import Model
from .sources import RasterSource
from .tiling import Tile, certainly_empty, windows_bounds

__all__ = ["Batch", "classify", "mark_certainly_empty", "one_blas_thread", "cancelled_error", "run_pipeline",
           "read_tiles", "batch_rows", "write_rows", "DEFAULT_READERS", "Progress"]

log = logging.getLogger(__name__)

DEFAULT_READERS = 2
WRITE_QUEUE_BATCHES = 2  # batches encoded but not yet written, at most
EMPTY_BATCH_TILES = 4096  # nodata rows per transaction for tiles marked without being read
CONSTANT_TOLERANCE = 1  # a tile whose valid pixels span at most this many grey levels per band is "constant"

Progress = Callable[[int, int], None]  # (tiles done, tiles in the grid)


@dataclass
class Batch:
    tiles: list[Tile]
    status: list[int]
    pixels: np.ndarray | None  # preprocessed, only the tiles with status "embedded" (None: no tile was read)


def classify(rgb: np.ndarray, valid: np.ndarray) -> int:
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


def mark_certainly_empty(source: RasterSource, db: sqlite3.Connection, todo: list[Tile], n_done: int,
                          n_total: int, progress: Progress | None,
                          is_cancelled: Callable[[], bool] | None) -> list[Tile]:
    """Write as nodata, without reading them, the tiles of ``todo`` in which ``source.coverage()`` shows no
    valid pixel (reading them would find none: ``classify`` makes such a tile nodata); returns the tiles
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
            raise cancelled_error(source, n_done + start, n_total)
        chunk = unread[start : start + EMPTY_BATCH_TILES]
        write_rows(db, batch_rows(source, Batch(chunk, [STATUS["nodata"]] * len(chunk), None), None))
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


def cancelled_error(source: RasterSource, kept: int, n_total: int) -> Cancelled:
    return Cancelled(f"Indexing of '{source.name}' was cancelled; {kept} of {n_total} tiles are kept and the next "
                     "run resumes from there.")


def run_pipeline(source, model, index, todo, n_done, n_total, progress, is_cancelled, batch_size, readers, db=None):
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

    def read_batch(batch_tiles: list[Tile]) -> Batch:  # on a reader thread, with that thread's handle
        return read_tiles(reader(), model, batch_tiles)

    encode_seconds = 0.0

    def encode(batch: Batch) -> list[tuple]:
        nonlocal encode_seconds
        tick = time.perf_counter()
        vectors = model.embed_preprocessed(batch.pixels) if len(batch.pixels) else None
        encode_seconds += time.perf_counter() - tick
        return batch_rows(source, batch, vectors)

    if inline:
        for batch_tiles in batches:
            if is_cancelled and is_cancelled():
                raise cancelled_error(source, n_done, n_total)
            rows = encode(read_batch(batch_tiles))
            with closing(index.connect()) if db is None else nullcontext(db) as catalog:
                write_rows(catalog, rows)
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
                write_rows(db, item)
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
        raise cancelled_error(source, written[0], n_total)
    return encode_seconds


def read_tiles(source: RasterSource, model: Model, tiles: list[Tile]) -> Batch:
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
        code = classify(rgb, valid)
        status.append(code)
        if code == STATUS["embedded"]:
            kept.append(rgb)
    pixels = model.preprocess(kept) if kept else np.zeros((0, 3, model.image_size, model.image_size), np.float32)
    return Batch(tiles, status, pixels)


def batch_rows(source: RasterSource, batch: Batch, vectors: np.ndarray | None) -> list[tuple]:
    """The catalog rows of a batch. Runs on the calling thread: a QGIS source's coordinate
    transform must stay on the thread that uses it (PROJ contexts are per thread). Bounds and corners
    are computed for the whole batch in numpy (an all-nodata raster of 1.6M tiles writes nothing else)."""
    boxes = np.array([(t.window.col_off, t.window.row_off, t.window.width, t.window.height) for t in batch.tiles],
                     dtype=np.int64).reshape(-1, 4)
    bounds = windows_bounds(source.transform, boxes)
    corners = [None] * len(bounds)
    if source.crs_wkt and len(bounds):
        xs = bounds[:, [0, 2, 2, 0]].ravel()  # the envelope's corners clockwise from top-left
        ys = bounds[:, [3, 3, 1, 1]].ravel()
        lonlat = source.to_wgs84(xs, ys)
        if lonlat is not None:
            pairs = np.stack([np.round(a, 9) for a in lonlat], axis=-1).reshape(-1, 8)
            if np.isfinite(pairs).all():  # repr of a float is what json writes for it
                corners = [_CORNERS_JSON % tuple(row) for row in pairs.tolist()]
            else:
                corners = [json.dumps(row.reshape(4, 2).tolist()) for row in pairs]
    rows, vector_iter = [], iter(vectors if vectors is not None else [])
    for tile, code, box, corner in zip(batch.tiles, batch.status, bounds.tolist(), corners):
        blob = next(vector_iter).astype(np.float32).tobytes() if code == STATUS["embedded"] else None
        w = tile.window
        rows.append((tile.index, tile.row, tile.col, w.col_off, w.row_off, w.width, w.height, *box, corner, code, blob))
    return rows


_CORNERS_JSON = "[[%r, %r], [%r, %r], [%r, %r], [%r, %r]]"


def write_rows(db, rows: list[tuple]) -> None:
    with db:  # one transaction per batch
        db.executemany("INSERT OR REPLACE INTO tiles VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
