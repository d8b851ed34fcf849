"""One raster's index on disk: tile catalog (SQLite) + embeddings (faiss), and how to open them.

Folder layout (``<cache>/indexes/<key>/``)::

    meta.json       raster, CRS, geotransform, grid, model name + sha256, counts, complete flag
    catalog.sqlite  one row per grid tile: window, bounds (raster CRS), corner lon/lat, status,
                    embedding (float32 blob); each batch is one transaction, so an interrupted
                    run keeps every finished batch and resumes after it
    index.faiss     inner-product index over the embedded tiles, written once the run completes
    ids.npy         position in index.faiss -> tile index

An index is checked before it is trusted (``core.integrity``: recorded sizes and checksums, the
catalog's header and tile count; SQLite's quick_check when it is indexed again); one that fails is
skipped by searches with one sentence saying why, and rebuilt by the next ``build_index`` of its raster.
Reads open the catalog read-only (``mode=ro``, or ``immutable=1`` where the cache cannot be written), so
another user's or a read-only cache searches.

Exact search (``IndexFlatIP``) is used below ``APPROXIMATE_MIN_TILES`` tiles, HNSW above, and a compressed
IVF-PQ index re-ranked from 8-bit codes from ``COMPRESSED_MIN_TILES`` (``core.vectors``); see BENCHMARKS.md
for the measurements behind the switch-over sizes.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import atomic_path, atomic_write_json
from .errors import IndexDamagedError, IndexMismatchError, QueryError
from .integrity import INDEX_FILES, file_record, file_stamp, folder_stamps, index_problem, unchanged_since
from .tiling import Window, window_corners
from .vectors import (  # noqa: F401 - part of this module's interface (bench, tests)
    APPROXIMATE_MIN_TILES,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_NEIGHBOURS,
    build_faiss_index,
    load_faiss_index,
    make_faiss_index,
    reconstructs_exactly,
    search_parameters,
)

__all__ = ["TileIndex", "TileRecord", "STATUS", "APPROXIMATE_MIN_TILES", "TILE_ID_PATTERN",
           "list_indexes", "make_faiss_index", "meta_version"]

META_VERSION = 1
FINALIZE_CHUNK_TILES = 2048  # rows per fetch while building the faiss index: about 6 MiB in flight
STATUS = {"embedded": 1, "nodata": 2, "constant": 3}
# <first 8 hex digits of the index key>:<row>:<col>, ASCII digits without leading zeros: one spelling per tile,
# so an example tile is always recognised (and excluded from its own results).
TILE_ID_PATTERN = re.compile(r"([0-9a-f]{8}):(0|[1-9][0-9]*):(0|[1-9][0-9]*)", re.ASCII)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tiles (
    id INTEGER PRIMARY KEY,  -- row * n_cols + col
    row INTEGER NOT NULL, col INTEGER NOT NULL,
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    minx REAL NOT NULL, miny REAL NOT NULL, maxx REAL NOT NULL, maxy REAL NOT NULL,
    corners_lonlat TEXT,     -- JSON [[lon, lat] x 4] clockwise from top-left; NULL without CRS
    status INTEGER NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS tiles_bounds ON tiles (minx, maxx, miny, maxy);
"""


class _Catalog(sqlite3.Connection):
    """A read-only connection that ``with`` also closes (sqlite3's own only commits: every connection left
    open keeps the catalog's -wal file, which a reader that cannot write then depends on), and that turns
    a damaged catalog met while reading into ``IndexDamagedError`` (``damaged``: its sentence)."""

    damaged = "The index's catalog is damaged; index the raster again to rebuild it."

    def __exit__(self, exc_type, exc, tb):
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            self.close()
        if isinstance(exc, sqlite3.DatabaseError) and "locked" not in str(exc):
            raise IndexDamagedError(self.damaged) from exc


@dataclass(frozen=True)
class TileRecord:
    """A catalogued tile, as search results and exports need it."""

    tile_id: str
    index: int
    row: int
    col: int
    window: tuple[int, int, int, int]  # col_off, row_off, width, height (pixels)
    bounds: tuple[float, float, float, float]  # raster CRS
    corners_lonlat: list | None
    corners: list  # [[x, y] x 4] in the raster CRS, clockwise from top-left (rotation-safe)


class TileIndex:
    """An index folder. Open with ``TileIndex.open``; created and filled by ``indexing.build_index``."""

    def __init__(self, directory: Path, meta: dict) -> None:
        self.directory = Path(directory)
        self.meta = meta
        self._faiss = None
        self._ids: np.ndarray | None = None
        self._verified = False
        self._meta_stamp: list | None = None  # meta.json's stamp when ``meta`` was read from it
        self.stamps: list | None = None  # the folder's stamps when its deep checks last passed (core.integrity)

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, verified: dict | None = None) -> TileIndex:
        """The index in ``directory``. ``verified``: a record of it as it was when its deep checks passed
        (``{"stamps", "meta"}``, kept by a merged index): while no file of the folder changed since, its meta
        is taken from the record and it counts as verified (``core.integrity``: trusted again)."""
        if verified and unchanged_since(directory, verified.get("stamps")):
            index = cls(directory, verified["meta"])
            index._meta_stamp, index.stamps, index._verified = verified["stamps"][0], verified["stamps"], True
            return index
        meta_path = Path(directory) / "meta.json"
        stamp = file_stamp(meta_path)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise IndexMismatchError(f"The index in '{directory}' is unreadable ({exc}).") from None
        if meta.get("version") != META_VERSION:
            raise IndexMismatchError(f"The index in '{directory}' was made by another version; re-index it.")
        index = cls(directory, meta)
        index._meta_stamp = stamp
        return index

    def connect(self, read_only: bool = False) -> sqlite3.Connection:
        """The catalog; ``read_only`` never writes (not even the schema) and works on a cache this user
        cannot write, where the catalog is opened immutable (SQLite then needs no -shm file beside it)."""
        path = self.directory / "catalog.sqlite"
        if not read_only:
            new = not path.exists()
            connection = sqlite3.connect(path, timeout=30)  # ``with`` is one transaction; close it yourself
            # A new catalog is made without flushing (a power cut can only tear an empty catalog, which the next
            # run's repair_catalog removes); then WAL with synchronous=NORMAL: a commit is not flushed (a
            # checkpoint is, and finalize makes one), so a power cut may lose the last batches but never
            # damages the catalog, and resume embeds them again. FULL flushed every batch and 4 times while
            # making the catalog: 7 fdatasyncs for a raster of one batch, now 3 (BENCHMARKS.md figure 6).
            connection.execute(f"PRAGMA synchronous={'OFF' if new else 'NORMAL'}")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            if new:
                connection.execute("PRAGMA synchronous=NORMAL")
            return connection
        if not path.is_file():
            raise IndexDamagedError(self.damaged_sentence("its catalog is missing"))
        # A WAL catalog opened mode=ro needs its -shm file, or a folder it may create one in; without either,
        # and with no -wal left behind (finalize checkpoints it away), immutable=1 reads the file as it is.
        writable = os.access(self.directory, os.W_OK) and os.access(path, os.W_OK)
        immutable = not writable and not Path(f"{path}-wal").exists()
        uri = f"{path.resolve().as_uri()}?{'immutable=1' if immutable else 'mode=ro'}"
        connection = sqlite3.connect(uri, uri=True, timeout=30, factory=_Catalog)
        connection.damaged = self.damaged_sentence("its catalog is damaged")
        return connection

    def problem(self, deep: bool = False, thorough: bool = False, verified: dict | None = None) -> str | None:
        """Why this index cannot be searched, as a phrase ("its file ids.npy is missing"), or None.

        The levels of checking are ``core.integrity``'s: cheap, ``deep`` (made once per object, or not at all
        while the folder is as ``verified`` records it: see ``open``), ``thorough``.
        """
        if deep and not thorough and not self._verified and verified and verified["stamps"][:1] == [self._meta_stamp] \
                and unchanged_since(self.directory, verified["stamps"]):  # meta read from the file as verified
            self.stamps, self._verified = verified["stamps"], True
        if deep and not thorough and self._verified:
            return None
        stamps = folder_stamps(self.directory) if deep or thorough else None  # before the checks: a later change shows
        found = index_problem(self.directory, self.meta, lambda: self.connect(read_only=True), deep, thorough)
        self._verified = (deep or thorough) and found is None
        self.stamps = stamps if self._verified and stamps[0] == self._meta_stamp else None
        return found

    @property
    def verified(self) -> bool:
        """Whether the deep checks passed (or were trusted again) for this object."""
        return self._verified

    def damaged_sentence(self, problem: str) -> str:
        return f"The index of '{self.raster_name}' cannot be used ({problem}); index the raster again to rebuild it."

    def verify(self, verified: dict | None = None) -> None:
        """Raise ``IndexDamagedError`` unless the deep checks pass (made once per object; ``problem``)."""
        problem = self.problem(deep=True, verified=verified)
        if problem:
            raise IndexDamagedError(self.damaged_sentence(problem))

    def write_meta(self) -> None:
        atomic_write_json(self.directory / "meta.json", self.meta)

    # -- what it holds -------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete")) and (self.directory / "index.faiss").is_file()

    @property
    def raster_uri(self) -> str:
        return self.meta["raster"]["uri"]

    @property
    def raster_name(self) -> str:
        return self.meta["raster"]["name"]

    @property
    def crs_wkt(self) -> str | None:
        return self.meta["raster"]["crs_wkt"]

    @property
    def n_cols(self) -> int:
        return int(self.meta["grid_shape"][1])

    def tile_id(self, index: int) -> str:
        """Stable, human-readable tile id: ``<index key, 8 hex>:<row>:<col>``."""
        row, col = divmod(int(index), self.n_cols)
        return f"{self.key[:8]}:{row}:{col}"

    def parse_tile_id(self, tile_id: str) -> int | None:
        """The tile index within this index for a tile id, or None when it is not one of this index's.

        Strict (``TILE_ID_PATTERN``); raises QueryError for this index's key with a row or column
        outside its grid, which would otherwise alias another tile.
        """
        match = TILE_ID_PATTERN.fullmatch(tile_id)
        if match is None or match[1] != self.key[:8]:
            return None
        (n_rows, n_cols), row, col = self.meta["grid_shape"], int(match[2]), int(match[3])
        if row >= n_rows or col >= n_cols:
            raise QueryError(f"Tile {tile_id} is outside the grid of '{self.raster_name}' (rows 0 to {n_rows - 1}, "
                             f"columns 0 to {n_cols - 1}).")
        return row * n_cols + col

    def check_model(self, model_sha256: str) -> None:
        if self.meta["model"]["sha256"] != model_sha256:
            raise IndexMismatchError(
                f"The index of '{self.raster_name}' was made with model '{self.meta['model']['name']}', "
                "not the model in use; re-index the raster with this model."
            )

    def counts(self, db: sqlite3.Connection | None = None) -> dict[str, int]:
        """Tiles per status; ``db``: an open catalog connection to ask (else a read-only one is opened)."""
        with nullcontext(db) if db is not None else self.connect(read_only=True) as catalog:
            rows = dict(catalog.execute("SELECT status, COUNT(*) FROM tiles GROUP BY status").fetchall())
        return {name: int(rows.get(code, 0)) for name, code in STATUS.items()}

    def counts_total(self) -> int:
        """Tiles in the catalog, whatever their status (0 for a run that wrote nothing yet)."""
        with self.connect(read_only=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])

    # -- faiss -----------------------------------------------------------------------------------
    def finalize(self, db: sqlite3.Connection | None = None) -> None:
        """Build index.faiss + ids.npy from the catalog's embeddings and mark the index complete.

        ``db``: the indexing run's open catalog connection, left open (else one is opened and closed here).
        """
        import faiss

        dim = int(self.meta["model"]["embed_dim"])
        with closing(self.connect()) if db is None else nullcontext(db) as db:
            count = int(db.execute("SELECT COUNT(*) FROM tiles WHERE status = ?", (STATUS["embedded"],)).fetchone()[0])
            ids = np.empty(count, dtype=np.int64)

            def chunks():  # streamed: peak memory is the faiss index itself, not the catalog three times over
                filled = 0
                for chunk_ids, vectors in self.embedded_chunks(db):
                    ids[filled : filled + len(chunk_ids)] = chunk_ids
                    filled += len(chunk_ids)
                    yield vectors

            index = build_faiss_index(dim, count, chunks)
            counts = self.counts(db)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a finished catalog is one file, readable read-only
        with atomic_path(self.directory / "ids.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, ids)
        with atomic_path(self.directory / "index.faiss") as tmp:
            faiss.write_index(index, str(tmp))
        self.meta["complete"] = True
        self.meta["index_type"] = type(index).__name__
        self.meta["counts"] = counts
        self.meta["files"] = {name: file_record(self.directory / name) for name in INDEX_FILES}
        self.write_meta()
        self._faiss, self._ids = index, ids
        self._verified = True
        self.stamps = folder_stamps(self.directory)
        self._meta_stamp = self.stamps[0]

    def embedded_chunks(self, db: sqlite3.Connection | None = None):
        """The catalog's embedded tiles in tile order, as (tile indexes [n] int64, vectors [n, dim] float32) chunks
        of ``FINALIZE_CHUNK_TILES``: the exact stored embeddings (a compressed faiss kind cannot give them back).
        ``db``: an open catalog connection (finalize's), else the catalog is opened read-only for the iteration
        (a damaged one then raises ``IndexDamagedError``). There, a row whose embedding is damaged while the
        catalog's structure holds (which only the next ``index`` repairs) is taken from index.faiss instead.
        """
        dim = int(self.meta["model"]["embed_dim"])
        with self.connect(read_only=True) if db is None else _borrowed(db) as catalog:
            cursor = catalog.execute("SELECT id, embedding FROM tiles WHERE status = ? ORDER BY id",
                                     (STATUS["embedded"],))
            while rows := cursor.fetchmany(FINALIZE_CHUNK_TILES):
                ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                whole = [isinstance(r[1], bytes) and len(r[1]) == 4 * dim for r in rows]
                if all(whole) or db is not None:
                    yield ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
                    continue
                vectors = np.empty((len(rows), dim), dtype=np.float32)
                for row, (_, blob) in enumerate(rows):
                    if whole[row]:
                        vectors[row] = np.frombuffer(blob, dtype=np.float32)
                damaged = np.flatnonzero(~np.array(whole))
                vectors[damaged] = self.vectors(ids[damaged].tolist())
                yield ids, vectors

    def _load(self):
        if self._faiss is None:

            self.verify()
            try:
                index = load_faiss_index(self.directory / "index.faiss")
                ids = np.load(self.directory / "ids.npy", allow_pickle=False)
            except (RuntimeError, ValueError, OSError):  # only reached by an index made before checksums
                raise IndexDamagedError(self.damaged_sentence("its files cannot be read")) from None
            if ids.ndim != 1 or index.ntotal != len(ids) or len(ids) != self.meta.get("counts", {}).get("embedded"):
                raise IndexDamagedError(self.damaged_sentence("its files disagree on the number of tiles"))
            self._faiss, self._ids = index, ids
        return self._faiss, self._ids

    def __len__(self) -> int:
        return len(self._load()[1])

    def search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None):
        """(scores [Q,k], tile indexes [Q,k]) for query vectors; -1 marks missing hits.

        allowed: tile indexes the search is restricted to (e.g. a bounding box), or None for all.
        """
        import faiss

        index, ids = self._load()
        params = None
        if allowed is not None:
            positions = np.searchsorted(ids, allowed)
            positions = positions[(positions < len(ids)) & (ids[np.minimum(positions, len(ids) - 1)] == allowed)]
            if len(positions) == 0:
                return np.full((len(vectors), k), -np.inf, np.float32), np.full((len(vectors), k), -1)
            selector = faiss.IDSelectorBatch(positions.astype(np.int64))
            params = search_parameters(index, selector, selected=len(positions))
        k_eff = min(k, len(ids))
        if k_eff == 0:
            return np.full((len(vectors), k), -np.inf, np.float32), np.full((len(vectors), k), -1)
        # One query: a single faiss thread is faster (OpenMP fork/join costs more than the parallel
        # scan saves: 57 ms against 282 ms exact at 1M tiles on 2 cores, BENCHMARKS.md figure 5).
        threads = faiss.omp_get_max_threads()
        if len(vectors) == 1:
            faiss.omp_set_num_threads(1)
        try:
            scores, positions = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k_eff, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        tile_indexes = np.where(positions >= 0, ids[np.maximum(positions, 0)], -1)
        return scores, tile_indexes

    def vectors(self, tile_indexes: list[int]) -> np.ndarray:
        """Stored embeddings of tiles (raises QueryError for tiles that were skipped or do not exist).

        From the faiss index where it holds them exactly, else (a compressed index) from the catalog.
        """
        index, ids = self._load()
        positions = []
        for tile_index in tile_indexes:
            position = int(np.searchsorted(ids, tile_index))
            if position >= len(ids) or ids[position] != tile_index:
                raise QueryError(f"Tile {self.tile_id(tile_index)} has no embedding (it is empty or nodata).")
            positions.append(position)
        out = np.zeros((len(positions), index.d), dtype=np.float32)
        if reconstructs_exactly(index):
            for i, position in enumerate(positions):
                out[i] = index.reconstruct(position)
            return out
        wanted = [int(t) for t in tile_indexes]
        with self.connect(read_only=True) as db:
            stored = dict(db.execute(f"SELECT id, embedding FROM tiles WHERE id IN ({','.join('?' * len(wanted))})",
                                     wanted).fetchall()) if wanted else {}
        for i, tile_index in enumerate(wanted):
            out[i] = np.frombuffer(stored[tile_index], dtype=np.float32)
        return out

    def records(self, tile_indexes: list[int]) -> dict[int, TileRecord]:
        if not tile_indexes:
            return {}
        marks = ",".join("?" * len(tile_indexes))
        with self.connect(read_only=True) as db:
            rows = db.execute(
                "SELECT id, row, col, col_off, row_off, width, height, minx, miny, maxx, maxy, corners_lonlat "
                f"FROM tiles WHERE id IN ({marks})", [int(t) for t in tile_indexes]).fetchall()
        transform = tuple(self.meta["raster"]["transform"])
        return {
            r[0]: TileRecord(self.tile_id(r[0]), r[0], r[1], r[2], tuple(r[3:7]), tuple(r[7:11]),
                             json.loads(r[11]) if r[11] else None, window_corners(transform, Window(*r[3:7])))
            for r in rows
        }

    @property
    def rotated(self) -> bool:
        """Whether the raster's pixel grid is rotated or sheared (its tiles are not axis-aligned)."""
        transform = self.meta["raster"]["transform"]
        return transform[2] != 0 or transform[4] != 0

    def tiles_in_bounds(self, bounds: tuple[float, float, float, float]) -> np.ndarray:
        """Tile indexes of embedded tiles overlapping ``bounds`` (raster CRS; touching edges do not count).

        The catalog's envelopes select candidates; on a rotated raster each candidate's real corners
        decide (an envelope covers up to twice the tile's area there).
        """
        minx, miny, maxx, maxy = bounds
        with self.connect(read_only=True) as db:
            rows = db.execute(
                "SELECT id, col_off, row_off, width, height FROM tiles WHERE status = ? AND maxx > ? AND minx < ? "
                "AND maxy > ? AND miny < ? ORDER BY id", (STATUS["embedded"], minx, maxx, miny, maxy)).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        if self.rotated and len(rows):
            import shapely

            transform = tuple(self.meta["raster"]["transform"])
            tiles = shapely.polygons([window_corners(transform, Window(*r[1:])) for r in rows])
            box = shapely.box(minx, miny, maxx, maxy)
            ids = ids[shapely.intersects(tiles, box) & ~shapely.touches(tiles, box)]
        return ids

    def tile_containing(self, x: float, y: float) -> int | None:
        """The embedded tile whose centre is nearest to a point inside it (raster CRS), or None."""
        with self.connect(read_only=True) as db:
            row = db.execute(
                "SELECT id FROM tiles WHERE status = ? AND minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ? "
                "ORDER BY ((minx + maxx) / 2 - ?) * ((minx + maxx) / 2 - ?) "
                "+ ((miny + maxy) / 2 - ?) * ((miny + maxy) / 2 - ?) LIMIT 1",
                (STATUS["embedded"], x, x, y, y, x, x, y, y)).fetchone()
        return None if row is None else int(row[0])


@contextmanager
def _borrowed(db: sqlite3.Connection):
    """A connection someone else closes, used where ``closing`` would otherwise stand."""
    yield db


def meta_version(folder: Path) -> int | None:
    """The version a readable meta.json records, or None when it cannot be read."""
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def list_indexes(root: Path | None = None, model_sha256: str | None = None) -> list[TileIndex]:
    """Finished indexes in the cache that pass the cheap checks, optionally only one model's
    (``scan.scan_indexes`` also says why the others are skipped)."""
    from .scan import scan_indexes  # it builds on TileIndex

    return scan_indexes(root, model_sha256)[0]
