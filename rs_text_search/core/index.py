"""One raster's index on disk: tile catalog (SQLite) + embeddings (faiss), and how to open them.

Folder layout (``<cache>/indexes/<key>/``)::

    meta.json       raster, CRS, geotransform, grid, model name + sha256, counts, complete flag
    catalog.sqlite  one row per grid tile: window, bounds (raster CRS), corner lon/lat, status,
                    embedding (float32 blob); each batch is one transaction, so an interrupted
                    run keeps every finished batch and resumes after it
    index.faiss     inner-product index over the embedded tiles, written once the run completes
    ids.npy         position in index.faiss -> tile index

Exact search (``IndexFlatIP``) is used below ``APPROXIMATE_MIN_TILES`` tiles, HNSW above; see
BENCHMARKS.md for the measurements behind the switch-over size.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import atomic_path, atomic_write_json, cache_root
from .errors import IndexMismatchError, QueryError

__all__ = ["TileIndex", "TileRecord", "STATUS", "APPROXIMATE_MIN_TILES", "list_indexes", "make_faiss_index"]

META_VERSION = 1
APPROXIMATE_MIN_TILES = 200_000
# HNSW M=64, efConstruction=200, efSearch=512, chosen in the full benchmark run at 1,000,000 tiles of
# the bundled model's embeddings (BENCHMARKS.md, figure 5): recall@10 0.96 (text queries 0.96) at
# 1.39 ms p50, against 0.93 (text 0.91) at 1.24 ms for M=32/efConstruction=80, whose efSearch 1024
# reaches only 0.95 (text 0.94) at 2.56 ms. Text queries sit outside the image-embedding cloud (the
# modality gap), which is what the wider graph and beam pay for; the price is a 2.5x longer build
# (400 s against 158 s at 1M, a few % of indexing that many tiles) and 256 more bytes per tile.
HNSW_NEIGHBOURS = 64
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 512
FINALIZE_CHUNK_TILES = 2048  # rows per fetch while building the faiss index: about 6 MiB in flight
STATUS = {"embedded": 1, "nodata": 2, "constant": 3}

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


def make_faiss_index(vectors: np.ndarray, approximate: bool | None = None):
    """An inner-product faiss index over L2-normalised float32 vectors (exact or HNSW by size)."""
    import faiss

    dim = vectors.shape[1]
    if approximate is None:
        approximate = len(vectors) >= APPROXIMATE_MIN_TILES
    if approximate:
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _preallocated_vectors(index, count: int) -> np.ndarray | None:
    """For an exact index: its vector storage allocated once at the final size, as a writable array.

    faiss's ``add`` grows the storage like a std::vector, so adding chunk by chunk held up to twice
    the vectors at once (finalize peaked at 1.4x the vectors at 100,000 tiles, 1.1x this way).
    This does what ``IndexFlat.add`` does (resize ``codes``, copy rows, then set ``ntotal``) in one
    allocation; None where that storage is not available (HNSW, another faiss), which then adds.
    """
    import faiss

    codes = getattr(index, "codes", None)
    if not isinstance(index, faiss.IndexFlat) or not hasattr(codes, "resize") or count == 0:
        return None
    nbytes = count * index.code_size
    codes.resize(nbytes)
    return faiss.rev_swig_ptr(codes.data(), nbytes).view(np.float32).reshape(count, index.d)


class TileIndex:
    """An index folder. Open with ``TileIndex.open``; created and filled by ``indexing.build_index``."""

    def __init__(self, directory: Path, meta: dict) -> None:
        self.directory = Path(directory)
        self.meta = meta
        self._faiss = None
        self._ids: np.ndarray | None = None

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path) -> TileIndex:
        meta_path = Path(directory) / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise IndexMismatchError(f"The index in '{directory}' is unreadable ({exc}).") from None
        if meta.get("version") != META_VERSION:
            raise IndexMismatchError(f"The index in '{directory}' was made by another version; re-index it.")
        return cls(directory, meta)

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.directory / "catalog.sqlite", timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(_SCHEMA)
        return connection

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
        """The tile index within this index for a tile id, or None when it belongs to another index."""
        parts = tile_id.split(":")
        if len(parts) != 3 or parts[0] != self.key[:8] or not (parts[1].isdigit() and parts[2].isdigit()):
            return None
        return int(parts[1]) * self.n_cols + int(parts[2])

    def check_model(self, model_sha256: str) -> None:
        if self.meta["model"]["sha256"] != model_sha256:
            raise IndexMismatchError(
                f"The index of '{self.raster_name}' was made with model '{self.meta['model']['name']}', "
                "not the model in use; re-index the raster with this model."
            )

    def counts(self) -> dict[str, int]:
        with self.connect() as db:
            rows = dict(db.execute("SELECT status, COUNT(*) FROM tiles GROUP BY status").fetchall())
        return {name: int(rows.get(code, 0)) for name, code in STATUS.items()}

    def counts_total(self) -> int:
        """Tiles in the catalog, whatever their status (0 for a run that wrote nothing yet)."""
        with self.connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])

    # -- faiss -----------------------------------------------------------------------------------
    def finalize(self) -> None:
        """Build index.faiss + ids.npy from the catalog's embeddings and mark the index complete."""
        import faiss

        dim = int(self.meta["model"]["embed_dim"])
        embedded = (STATUS["embedded"],)
        with self.connect() as db:
            count = int(db.execute("SELECT COUNT(*) FROM tiles WHERE status = ?", embedded).fetchone()[0])
            index = make_faiss_index(np.zeros((0, dim), np.float32), approximate=count >= APPROXIMATE_MIN_TILES)
            exact = _preallocated_vectors(index, count)
            ids = np.empty(count, dtype=np.int64)
            filled = 0
            # Streamed in chunks: peak memory is the faiss index itself, not the catalog three times over.
            cursor = db.execute("SELECT id, embedding FROM tiles WHERE status = ? ORDER BY id", embedded)
            while rows := cursor.fetchmany(FINALIZE_CHUNK_TILES):
                chunk = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
                if exact is not None:
                    exact[filled : filled + len(rows)] = chunk
                else:
                    index.add(chunk)
                ids[filled : filled + len(rows)] = [r[0] for r in rows]
                filled += len(rows)
            if exact is not None:
                index.ntotal = filled
        with atomic_path(self.directory / "ids.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, ids)
        with atomic_path(self.directory / "index.faiss") as tmp:
            faiss.write_index(index, str(tmp))
        self.meta["complete"] = True
        self.meta["index_type"] = type(index).__name__
        self.meta["counts"] = self.counts()
        self.write_meta()
        self._faiss, self._ids = index, ids

    def _load(self):
        if self._faiss is None:
            import faiss

            if not self.complete:
                raise QueryError(f"The index of '{self.raster_name}' is not finished; index the raster again.")
            self._faiss = faiss.read_index(str(self.directory / "index.faiss"))
            if isinstance(self._faiss, faiss.IndexHNSWFlat):
                self._faiss.hnsw.efSearch = HNSW_EF_SEARCH
            self._ids = np.load(self.directory / "ids.npy")
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
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH)
                      if isinstance(index, faiss.IndexHNSWFlat) else faiss.SearchParameters(sel=selector))
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
        """Stored embeddings of tiles (raises QueryError for tiles that were skipped or do not exist)."""
        index, ids = self._load()
        out = np.zeros((len(tile_indexes), index.d), dtype=np.float32)
        for i, tile_index in enumerate(tile_indexes):
            position = int(np.searchsorted(ids, tile_index))
            if position >= len(ids) or ids[position] != tile_index:
                raise QueryError(f"Tile {self.tile_id(tile_index)} has no embedding (it is empty or nodata).")
            out[i] = index.reconstruct(position)
        return out

    def records(self, tile_indexes: list[int]) -> dict[int, TileRecord]:
        if not tile_indexes:
            return {}
        marks = ",".join("?" * len(tile_indexes))
        with self.connect() as db:
            rows = db.execute(
                "SELECT id, row, col, col_off, row_off, width, height, minx, miny, maxx, maxy, corners_lonlat "
                f"FROM tiles WHERE id IN ({marks})", [int(t) for t in tile_indexes]).fetchall()
        return {
            r[0]: TileRecord(self.tile_id(r[0]), r[0], r[1], r[2], tuple(r[3:7]), tuple(r[7:11]),
                             json.loads(r[11]) if r[11] else None)
            for r in rows
        }

    def tiles_in_bounds(self, bounds: tuple[float, float, float, float]) -> np.ndarray:
        """Tile indexes of embedded tiles overlapping ``bounds`` (raster CRS; touching edges do not count)."""
        minx, miny, maxx, maxy = bounds
        with self.connect() as db:
            rows = db.execute(
                "SELECT id FROM tiles WHERE status = ? AND maxx > ? AND minx < ? AND maxy > ? AND miny < ? "
                "ORDER BY id", (STATUS["embedded"], minx, maxx, miny, maxy)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def tile_containing(self, x: float, y: float) -> int | None:
        """The embedded tile whose centre is nearest to a point inside it (raster CRS), or None."""
        with self.connect() as db:
            row = db.execute(
                "SELECT id FROM tiles WHERE status = ? AND minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ? "
                "ORDER BY ((minx + maxx) / 2 - ?) * ((minx + maxx) / 2 - ?) "
                "+ ((miny + maxy) / 2 - ?) * ((miny + maxy) / 2 - ?) LIMIT 1",
                (STATUS["embedded"], x, x, y, y, x, x, y, y)).fetchone()
        return None if row is None else int(row[0])


def list_indexes(root: Path | None = None, model_sha256: str | None = None,
                 complete_only: bool = True) -> list[TileIndex]:
    """Indexes in the cache, optionally only those made by one model."""
    folder = (root or cache_root()) / "indexes"
    found = []
    for meta_path in sorted(folder.glob("*/meta.json")):
        try:
            index = TileIndex.open(meta_path.parent)
        except IndexMismatchError:
            continue
        if complete_only and not index.complete:
            continue
        if model_sha256 and index.meta["model"]["sha256"] != model_sha256:
            continue
        found.append(index)
    return found
