"""Indexing on a Dask cluster (``dask.distributed``): the workers read and embed, this process writes.

``index --workers N`` starts an embedded ``LocalCluster`` of N single-threaded worker processes on this
computer; ``index --scheduler ADDRESS`` uses a running cluster. Without either, indexing runs in-process
(``core.indexing.build_index``). Dask is imported only here and only when asked for, so the plugin
loads on a QGIS without it.

- mappers (the workers): a task is one chunk of ``CHUNK_BATCHES`` encoder batches of one raster's tiles,
  read, classified and preprocessed (``pipeline.read_tiles``) and encoded; it returns the tiles' statuses
  and the vectors of the embedded ones. The chunks of a large raster spread over the workers. Each
  worker process loads the model once (``_worker_model``) and refuses a model or a raster file that is
  not the one this process indexes (checked by hash and file identity).
- writer (this process; no worker writes the cache, nor needs to reach it): each finished chunk becomes
  catalog rows (``pipeline.batch_rows``), written in one SQLite transaction (``pipeline.write_rows``),
  so Ctrl-C, a killed client or a lost cluster keeps every finished chunk, and the next run, on Dask or
  not, resumes after it; a raster whose tiles are all written is finished as ``build_index`` finishes it
  (``indexing.finish_index``). The cache layout is the in-process one, index keys included.
- at most ``IN_FLIGHT_PER_THREAD`` chunks per worker thread are submitted at a time (memory); the
  scheduler re-runs the chunks of a worker that dies on another one.
- before any chunk, the tiles a raster's ``coverage`` shows to hold no valid pixel (a sparse GeoTIFF's
  unwritten blocks) are written as nodata here without being read, as ``build_index`` does; a raster that
  fails on its own (a damaged window, no image content) can be reported and left while the others go on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import Cancelled, ClusterError, ModelError, RasterError, RsTextSearchError
from .index import TileIndex
from .indexing import IndexingStats, IndexPlan, finish_index, index_errors, plan_index
from .model import Model, load_model
from .pipeline import Batch, batch_rows, mark_certainly_empty, one_blas_thread, read_tiles, write_rows
from .sources import RasterioSource, RasterSource, raster_identity
from .tiling import GridSpec, Tile

__all__ = ["DaskCluster", "dask_cluster", "build_indexes", "CONNECT_TIMEOUT_S"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer within this is one sentence, not a hang
CHUNK_BATCHES = 4  # encoder batches per task: 64 tiles on CPU, a few seconds of work (Dask's overhead: ms)
IN_FLIGHT_PER_THREAD = 2  # chunks submitted per worker thread: one running, one queued behind it
_NO_PIXELS = np.zeros((0, 3, 1, 1), np.float32)  # catalog rows need tiles and statuses, not the pixels

Progress = Callable[[int, int], None]  # (tiles done, tiles in all the grids)


@dataclass
class DaskCluster:
    """A connected ``distributed.Client``, and the ONNX Runtime threads its workers use (None: each worker
    shares its machine's cores among its own threads)."""

    client: object
    ort_threads: int | None = None


@contextmanager
def dask_cluster(workers: int | None = None, scheduler: str | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[DaskCluster]:
    """A client of the cluster at ``scheduler``, or of an embedded ``LocalCluster`` of ``workers`` processes
    (one thread each; their ONNX Runtime threads share this computer's cores); closed on leaving."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("Indexing on Dask needs the dask.distributed package (pip install 'dask[distributed]'); "
                           "without --workers or --scheduler, indexing runs in this process.") from None
    if scheduler:
        try:
            _probe(scheduler, connect_timeout_s)
            client = Client(scheduler, timeout=f"{connect_timeout_s}s", set_as_default=False)
        except Exception as exc:  # OSError, TimeoutError, ValueError for an address that is not one
            reason = getattr(exc, "strerror", None) or str(exc).rstrip(".") or type(exc).__name__
            raise ClusterError(f"No Dask scheduler answered at '{scheduler}' ({reason}, waiting at most "
                               f"{connect_timeout_s:g} s); check the address, e.g. tcp://host:8786, and that the "
                               "scheduler runs.") from None
        with closing(client):
            yield DaskCluster(client)
        return
    workers = workers or 1
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    with closing(cluster), closing(Client(cluster, set_as_default=False)) as client:
        client.wait_for_workers(workers)
        yield DaskCluster(client, max(1, (os.cpu_count() or 1) // workers))


def _probe(address: str, timeout_s: float) -> None:
    """Raise ValueError for an address that is not one, OSError when nothing listens at a TCP one: at once,
    where a ``Client`` would retry until its timeout, then keep retrying from its ``__del__``."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        socket.create_connection(parse_host_port(location), timeout=timeout_s).close()


@dataclass(frozen=True)
class _WorkerSpec:
    """What a worker needs to embed a raster's chunks: its file (checked against ``identity``) and the model."""

    source_args: tuple  # RasterioSource(*source_args)
    identity: dict
    model_dir: str
    model_sha256: str
    provider: str
    batch_size: int
    ort_threads: int | None


_models: dict[tuple, Model] = {}  # in a worker process: the model, loaded once
_models_lock = threading.Lock()


def _worker_model(spec: _WorkerSpec) -> Model:
    threads = spec.ort_threads
    if threads is None:  # a worker of a real cluster: its threads share its machine's cores
        from distributed import get_worker

        threads = max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
    key = (spec.model_dir, spec.model_sha256, spec.provider, spec.batch_size, threads)
    with _models_lock:
        if key not in _models:
            try:
                model = load_model(spec.model_dir, provider=spec.provider, threads=threads,
                                   batch_size=spec.batch_size)
            except ModelError as exc:
                raise ModelError(f"A Dask worker cannot load the model ({str(exc).rstrip('.')}); workers need the "
                                 "model folder at the same path as this computer.") from None
            if model.sha256 != spec.model_sha256:
                raise ModelError(f"The model folder '{spec.model_dir}' on a Dask worker holds another model than "
                                 "the one in use here; give the workers the same model folder.")
            _models[key] = model
        return _models[key]


def _worker_source(spec: _WorkerSpec) -> RasterioSource:
    uri = spec.source_args[0]
    expected = {k: v for k, v in spec.identity.items() if k != "bands"}
    try:
        same = raster_identity(uri) == expected
    except OSError:
        same = False
    if not same:
        raise ClusterError(f"A Dask worker cannot read '{uri}' as this computer sees it (the file is missing there "
                           "or differs); workers need the same raster files at the same paths.")
    return RasterioSource(*spec.source_args)


def embed_chunk(spec: _WorkerSpec, tiles: list[Tile]) -> tuple[np.ndarray, np.ndarray, float]:
    """On a worker: (status per tile, vectors of the embedded tiles in tile order, seconds in the encoder)."""
    model = _worker_model(spec)
    status: list[int] = []
    vectors = [np.zeros((0, model.embed_dim), np.float32)]
    encode_seconds = 0.0
    with one_blas_thread(), _worker_source(spec) as source:
        for start in range(0, len(tiles), model.batch_size):
            batch = read_tiles(source, model, tiles[start : start + model.batch_size])
            status += batch.status
            if len(batch.pixels):
                tick = time.perf_counter()
                vectors.append(model.embed_preprocessed(batch.pixels))
                encode_seconds += time.perf_counter() - tick
    return np.asarray(status, np.int8), np.concatenate(vectors), encode_seconds


@dataclass
class _Raster:
    """A raster being indexed: its plan, the chunks still out, and its catalog connection (opened on first use)."""

    source: RasterSource
    plan: IndexPlan
    spec: _WorkerSpec
    to_read: list[Tile]  # the plan's tiles left to do, less those marked nodata unread (``source.coverage``)
    chunks_left: int
    started: float
    encode_seconds: float = 0.0
    not_read: int = 0  # tiles marked nodata without being read
    db: object = field(default=None, repr=False)

    def write(self, tiles: list[Tile], status: np.ndarray, vectors: np.ndarray) -> None:
        rows = batch_rows(self.source, Batch(tiles, [int(s) for s in status], _NO_PIXELS), vectors)
        with index_errors(self.source, self.plan.index.directory):
            if self.db is None:
                self.db = self.plan.index.connect()
            write_rows(self.db, rows)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def build_indexes(jobs: Sequence[tuple[RasterSource, GridSpec]], model: Model, cluster: DaskCluster,
                  root: Path | None = None, progress: Progress | None = None,
                  is_cancelled: Callable[[], bool] | None = None, provider: str = "auto",
                  batch_size: int | None = None, chunk_tiles: int | None = None,
                  failed: Callable[[int, RasterError], None] | None = None,
                  ) -> list[tuple[TileIndex, IndexingStats] | None]:
    """Index every (raster, grid) of ``jobs`` on ``cluster``: one (index, stats) per job, in order, equal to
    what ``build_index`` makes of each (same folders and keys, same tiles and statuses, the same vectors to
    float precision). ``jobs``' sources must be ``RasterioSource`` (workers open the files themselves).

    Resumes what an earlier run of either kind left; ``progress`` gets (tiles done, tiles in all grids) after
    each chunk. Raises ``Cancelled`` when ``is_cancelled()`` turns true (checked after each chunk), keeping
    every chunk written; Ctrl-C does the same through ``KeyboardInterrupt``.

    failed: called with (job number, error) for a raster that fails on its own (a window GDAL cannot read,
    no tile with image content); its result is None and the other rasters go on, as a collection of
    thousands of files needs. Without it, the first such failure is raised.
    """
    from distributed import as_completed

    batch_size = batch_size or model.batch_size
    chunk_tiles = chunk_tiles or CHUNK_BATCHES * batch_size
    results: list[tuple[TileIndex, IndexingStats] | None] = [None] * len(jobs)
    rasters: dict[int, _Raster] = {}
    plans = []
    for source, _ in jobs:
        if not isinstance(source, RasterioSource):
            raise ValueError(f"'{source.name}' is not a raster file that Dask workers can open")

    def finish(i: int, raster: _Raster) -> None:
        rasters.pop(i).close()
        try:
            results[i] = raster.plan.index, finish_index(raster.source, raster.plan, raster.started,
                                                         raster.encode_seconds, not_read=raster.not_read)
        except RasterError as exc:
            give_up(i, exc)

    def give_up(i: int, exc: RasterError) -> None:
        if failed is None:
            raise exc
        failed(i, exc)

    for i, (source, grid) in enumerate(jobs):
        plan = plan_index(source, model, grid, root)
        plans.append(plan)
        if plan.index.complete:
            results[i] = plan.index, plan.stats()
            continue
        spec = _WorkerSpec(source.reopen_args(), source.identity(), str(model.directory), model.sha256, provider,
                           batch_size, cluster.ort_threads)
        started, todo = time.perf_counter(), plan.todo
        # Regions the raster's coverage shows without a valid pixel are written as nodata here, unread, as
        # build_index does: no worker reads the empty blocks of a sparse GeoTIFF.
        with index_errors(source, plan.index.directory), closing(plan.index.connect()) as db:
            to_read = mark_certainly_empty(source, db, todo, len(plan.done), len(plan.tiles), None, is_cancelled)
        rasters[i] = _Raster(source, plan, spec, to_read, -(-len(to_read) // chunk_tiles), started,
                             not_read=len(todo) - len(to_read))
    total, done = sum(len(p.tiles) for p in plans), sum(len(p.done) for p in plans)
    done += sum(r.not_read for r in rasters.values())
    for i, raster in list(rasters.items()):
        if raster.chunks_left == 0:  # every tile written (or marked unread) before any chunk was submitted
            finish(i, raster)
    if progress:
        progress(done, total)
    chunks = ((i, r.to_read[s : s + chunk_tiles]) for i, r in list(rasters.items())
              for s in range(0, len(r.to_read), chunk_tiles))
    client = cluster.client
    in_flight = max(2, IN_FLIGHT_PER_THREAD * sum(client.nthreads().values()))
    owners: dict = {}
    finished = as_completed(loop=client.loop)

    def submit_next() -> None:
        item = next((c for c in chunks if c[0] in rasters), None)  # not the chunks of a raster that failed
        if item is not None:
            key = f"rs-embed-{rasters[item[0]].plan.index.key[:8]}-{item[1][0].index}-{uuid.uuid4().hex[:8]}"
            future = client.submit(embed_chunk, rasters[item[0]].spec, item[1], key=key)  # a name in the dashboard
            owners[future] = item
            finished.add(future)

    cancelled = False
    try:
        for _ in range(in_flight):
            submit_next()
        for future in finished:
            i, tiles = owners.pop(future)
            raster = rasters.get(i)
            if raster is None:  # a chunk of a raster that failed meanwhile
                future.release()
                submit_next()
                continue
            try:
                status, vectors, encode_seconds = _chunk_result(future, raster)
            except RasterError as exc:
                rasters.pop(i).close()
                give_up(i, exc)
                status = None
            future.release()
            submit_next()
            done += len(tiles)
            if status is not None:
                raster.write(tiles, status, vectors)
                raster.encode_seconds += encode_seconds
                raster.chunks_left -= 1
                if raster.chunks_left == 0:
                    finish(i, raster)
            if progress:
                progress(done, total)
            if is_cancelled and is_cancelled():
                cancelled = True
                break
    finally:
        for future in owners:
            future.cancel()
        for raster in rasters.values():
            raster.close()
    if cancelled:
        raise Cancelled(f"Indexing was cancelled; {done} of {total} tiles are kept and the next run resumes "
                        "from there.")
    return results


def _chunk_result(future, raster: _Raster) -> tuple[np.ndarray, np.ndarray, float]:
    """A finished chunk's result; a worker's failure as one sentence (a damaged window leaves no partial index)."""
    with index_errors(raster.source, raster.plan.index.directory):
        try:
            return future.result()
        except RsTextSearchError:
            raise
        except Exception as exc:  # KilledWorker (a chunk that killed its workers), a lost scheduler, a bug
            reason = str(exc).strip().rstrip(".") or type(exc).__name__
            raise ClusterError(f"Indexing '{raster.source.name}' on Dask failed ({reason}); the finished chunks are "
                               "kept and the next run resumes after them.") from exc
