"""The faiss index over a raster's tile embeddings: exact inner product below ``APPROXIMATE_MIN_TILES``
tiles, HNSW above, and the exact index's storage allocated once at its final size."""

from __future__ import annotations

import numpy as np

__all__ = ["APPROXIMATE_MIN_TILES", "HNSW_NEIGHBOURS", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "make_faiss_index"]

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
