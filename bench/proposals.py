"""Engine changes the benchmarks propose and measure before they are made (patched into a child only).

Earlier proposals measured here are now in the engine (faster tile classification and
preprocessing, ONNX Runtime threads that do not spin, one faiss thread for a single query, a
64 MB GDAL block cache in the command line). A streaming ``TileIndex.finalize`` was measured and
did not lower the peak memory, so it was dropped. What remains open:

- ``writer thread``: the engine's pipeline writes each batch to SQLite (bounds, lon/lat corners
  through pyproj, JSON, one transaction) on the same thread that runs the encoder, so the encoder
  idles while a batch is written. :func:`run_pipeline` is the engine's ``_run_pipeline`` with one
  change: batches go through a small queue to a writer thread, so writing batch *n* overlaps
  encoding batch *n + 1* (ONNX Runtime releases the GIL while it runs). Same rows, same order,
  same progress and cancellation points.

``install()`` patches it into the engine module of the current process; only
:mod:`bench.index_child` ``--proposed`` calls it, to measure indexing as it would be.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

WRITE_QUEUE_BATCHES = 2  # batches encoded but not yet written, at most


def run_pipeline(source, model, index, todo, n_done, n_total, progress, is_cancelled, batch_size, readers):
    """``rs_text_search.core.indexing._run_pipeline`` with the SQLite writes on their own thread."""
    from rs_text_search.core.errors import Cancelled, RasterError
    from rs_text_search.core.index import STATUS
    from rs_text_search.core.indexing import _Batch, _classify, _write_batch

    local = threading.local()
    handles = []
    handles_lock = threading.Lock()

    def reader():
        if not hasattr(local, "source"):
            local.source = source.clone()
            with handles_lock:
                handles.append(local.source)
        return local.source

    def read_batch(batch_tiles):
        src = reader()
        status, kept = [], []
        for tile in batch_tiles:
            try:
                rgb, valid = src.read_masked(tile.window, model.image_size)
            except RasterError:
                raise
            except Exception as exc:  # GDAL raises several error types for damaged blocks
                raise RasterError(f"Reading '{source.name}' failed at pixel window {tile.window} ({exc}).") from exc
            code = _classify(rgb, valid)
            status.append(code)
            if code == STATUS["embedded"]:
                kept.append(rgb)
        pixels = model.preprocess(kept) if kept else np.zeros((0, 3, model.image_size, model.image_size),
                                                               np.float32)
        return _Batch(batch_tiles, status, pixels)

    written = [n_done]
    to_write: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE_BATCHES)
    failure: list[BaseException] = []

    def writer() -> None:
        db = index.connect()
        try:
            while (item := to_write.get()) is not None:
                if failure:
                    continue  # drain without writing once something failed
                try:
                    _write_batch(db, index, source, *item)
                    written[0] += len(item[0].tiles)
                    if progress:
                        progress(written[0], n_total)
                except BaseException as exc:  # reported on the encoder thread
                    failure.append(exc)
        finally:
            db.close()

    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    encode_seconds = 0.0
    pool = ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="rs-reader")
    writing = threading.Thread(target=writer, name="rs-writer", daemon=True)
    writing.start()
    pending: deque = deque()
    try:
        batch_iter = iter(batches)
        for batch_tiles in batch_iter:  # keep `readers + 1` batches in flight
            pending.append(pool.submit(read_batch, batch_tiles))
            if len(pending) > readers:
                break
        while pending:
            if failure:
                raise failure[0]
            if is_cancelled and is_cancelled():
                raise Cancelled(f"Indexing of '{source.name}' was cancelled; {written[0]} of {n_total} tiles "
                                "are kept and the next run resumes from there.")
            batch = pending.popleft().result()
            next_tiles = next(batch_iter, None)
            if next_tiles is not None:
                pending.append(pool.submit(read_batch, next_tiles))
            tick = time.perf_counter()
            vectors = model.embed_preprocessed(batch.pixels) if len(batch.pixels) else None
            encode_seconds += time.perf_counter() - tick
            to_write.put((batch, vectors))
    finally:
        to_write.put(None)
        writing.join()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for handle in handles:
            handle.close()
    if failure:
        raise failure[0]
    return encode_seconds


def install() -> None:
    """Patch the proposals into the engine for this process (bench.index_child --proposed)."""
    import rs_text_search.core.indexing as indexing

    indexing._run_pipeline = run_pipeline
