"""The faiss index over a raster's tile embeddings: exact inner product below ``APPROXIMATE_MIN_TILES``
tiles, HNSW above, and the exact index's storage allocated once at its final size."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["APPROXIMATE_MIN_TILES", "HNSW_NEIGHBOURS", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "make_faiss_index",
           "build_faiss_index", "load_faiss_index", "search_parameters"]

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


def build_faiss_index(dim: int, count: int, chunks: Callable[[], Iterable[np.ndarray]]):
    """The engine's index kind for ``count`` vectors, filled chunk by chunk from ``chunks()``.

    ``chunks`` is called for a fresh iterator each time it is read (a kind that must be trained reads a
    sample first), so a caller streams from disk and never holds every vector at once. Each chunk is a
    float32 [n, dim] array of L2-normalised rows; the chunks together hold exactly ``count`` rows.
    """
    index = make_faiss_index(np.zeros((0, dim), np.float32), approximate=count >= APPROXIMATE_MIN_TILES)
    exact = _preallocated_vectors(index, count)
    filled = 0
    for chunk in chunks():
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        if exact is not None:
            exact[filled : filled + len(chunk)] = chunk
        else:
            index.add(chunk)
        filled += len(chunk)
    if exact is not None:
        index.ntotal = filled
    if filled != count:
        raise ValueError(f"expected {count} vectors, got {filled}")
    return index


def load_faiss_index(path):
    """A faiss index read from ``path`` with the engine's search settings for its kind (HNSW's beam)."""
    import faiss

    index = faiss.read_index(str(path))
    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def search_parameters(index, selector=None):
    """faiss search parameters for ``index`` restricted to ``selector`` (None: every vector)."""
    import faiss

    if selector is None:
        return None
    if isinstance(index, faiss.IndexHNSWFlat):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH)
    return faiss.SearchParameters(sel=selector)


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
