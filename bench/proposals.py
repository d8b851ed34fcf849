"""Engine changes the benchmarks propose and measure before they are made (patched into a child only).

Earlier proposals measured here (faster tile classification and preprocessing, ONNX Runtime
threads that do not spin, one faiss thread for a single query, a 64 MB GDAL block cache in the
command line) are now in the engine; what remains open is:

- ``finalize``: :meth:`rs_text_search.core.index.TileIndex.finalize` fetches every embedding row
  from SQLite, joins the blobs into one bytes object, wraps it in an array and lets faiss copy it:
  about three copies of the embeddings at the peak, so peak memory grows by ~3x the index size
  with the raster's tile count (figure 4). This version streams the rows in chunks straight into
  the faiss index (created empty with the same type rule), so the peak holds one copy plus a
  chunk. The files it writes are the same.

``install()`` patches it into the engine modules of the current process; only
:mod:`bench.index_child` ``--proposed`` calls it, to measure indexing as it would be.
"""

from __future__ import annotations

import numpy as np

FINALIZE_CHUNK_ROWS = 16_384


def finalize(self) -> None:
    """Same files and state as ``TileIndex.finalize``, without materialising every embedding row at once."""
    import faiss

    from rs_text_search.core.cache import atomic_path
    from rs_text_search.core.index import APPROXIMATE_MIN_TILES, STATUS, make_faiss_index

    dim = int(self.meta["model"]["embed_dim"])
    with self.connect() as db:
        count = db.execute("SELECT COUNT(*) FROM tiles WHERE status = ?", (STATUS["embedded"],)).fetchone()[0]
        index = make_faiss_index(np.zeros((0, dim), np.float32), approximate=count >= APPROXIMATE_MIN_TILES)
        ids = np.empty(count, dtype=np.int64)
        cursor = db.execute("SELECT id, embedding FROM tiles WHERE status = ? ORDER BY id", (STATUS["embedded"],))
        done = 0
        while rows := cursor.fetchmany(FINALIZE_CHUNK_ROWS):
            ids[done : done + len(rows)] = [r[0] for r in rows]
            index.add(np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim))
            done += len(rows)
    with atomic_path(self.directory / "ids.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, ids)
    with atomic_path(self.directory / "index.faiss") as tmp:
        faiss.write_index(index, str(tmp))
    self.meta["complete"] = True
    self.meta["index_type"] = type(index).__name__
    self.meta["counts"] = self.counts()
    self.write_meta()
    self._faiss, self._ids = index, ids


def install() -> None:
    """Patch the proposals into the engine for this process (bench.index_child --proposed)."""
    from rs_text_search.core.index import TileIndex

    TileIndex.finalize = finalize
