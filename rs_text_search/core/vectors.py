"""The faiss index over tile embeddings, of the kind the engine picks for their number.

- Below ``APPROXIMATE_MIN_TILES`` tiles: exact inner product (``IndexFlatIP``), 1,536 bytes per tile
  (384-d float32), its storage allocated once at its final size; exact search is under 10 ms up to
  about 100,000 tiles on one core.
- From there to ``COMPRESSED_MIN_TILES``: HNSW over the float32 vectors (about 2 KiB per tile with the
  graph), about 1.3 ms per query at 1M tiles, recall@10 0.96; its build grows faster than linearly
  (about 6 minutes at 1M tiles on 2 cores) and it needs 4 GiB of memory at 2M tiles.
- From ``COMPRESSED_MIN_TILES`` up (collections of tens of millions of tiles): a compressed index,
  inverted lists (IVF, its coarse centroids trained on a sample of the vectors: the chunk source is
  read twice) of half-precision vectors (``IndexIVFScalarQuantizer``, SQfp16), 778 bytes per tile
  (7.2 GiB at 10M tiles, half of float32, 40% of HNSW); at 10M tiles 3.8 ms p50, recall@10 1.00 for image
  and text queries, trained in 181 s and filled in 625 s on 2 cores (at 2M: 3 ms, 1.00, 156 s and 268 s on
  2 loaded cores; HNSW took 366 s for 1M); a query scans ``IVF_NPROBE`` lists of about sqrt(tiles)
  vectors each. Its vectors are not exact in
  faiss (``reconstructs_exactly``): the catalog keeps the float32 embeddings, and ``TileIndex.vectors``
  reads them there.

BENCHMARKS.md figures 5 and 8 hold the measurements behind these sizes and settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["APPROXIMATE_MIN_TILES", "COMPRESSED_MIN_TILES", "HNSW_NEIGHBOURS", "HNSW_EF_CONSTRUCTION",
           "HNSW_EF_SEARCH", "IVF_NPROBE", "index_kind", "compressed_factory",
           "make_faiss_index", "build_faiss_index", "load_faiss_index", "search_parameters",
           "reconstructs_exactly"]

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

COMPRESSED_MIN_TILES = 2_000_000
# IVF lists: the power of two at or above sqrt(tiles) (1,024 at 1M, 2,048 at 2M, 4,096 at 10M), so a
# list holds about sqrt(tiles) codes and the coarse quantiser costs about as much as one list's scan.
# Trained on TRAINING_ROWS_PER_LIST sampled vectors per list (faiss asks for at least 39).
TRAINING_ROWS_PER_LIST = 50
TRAINING_SEED = 0
# Codes: half precision, chosen on 1M tiles expanded from the bundled model's embeddings (bench.scale's
# data, 2 cores): the top-10 of a query lie within 0.01 of cosine similarity, 10th and 11th 0.00016 apart
# (median), finer than coarser codes can rank. IVF-SQ8 (392 bytes per tile) stopped at recall@10 0.94 for
# image queries whatever nprobe; 4-bit fast-scan PQ (IVF-PQ48x4fs, 24 bytes) re-ranked from SQ8 or fp16
# copies of its best 160 candidates reached 0.12 (0.61 from 2,560 candidates); SQfp16 at nprobe 16 of
# 1,024 lists 0.99 (text queries 0.97). Text queries need more lists than image queries (the modality
# gap: they sit outside the image-embedding cloud, so their nearest centroids say less).
COMPRESSED_CODES = "SQfp16"
# Lists scanned per query, from the sweep at 2,000,000 tiles (2,048 lists; BENCHMARKS.md figure 8, one
# faiss thread, 2 cores under a load of about 10, so p50 of one setting varied 3-11 ms between passes):
# nprobe 4 recall@10 0.92 (text queries 0.89), 8 0.99 (0.99) at 1.3-2.2 ms p50, 16 1.00 (1.00) at
# 3.0 ms in the engine's row, 32 1.00 at 12-15 ms. 16 keeps a margin for 10M tiles,
# whose 4,096 lists make 16 of them the share of the vectors that 8 are at 2M, and scans about
# 16 x sqrt(tiles) vectors: 39,000 at 10M, as many as 32 lists at 2M. Measured at 10M (4,096 lists,
# a load of 1-2): nprobe 8 recall@10 0.98 at 1.0 ms p50, 16 1.00 at 2.0-3.8 ms, 32 1.00 at 4.0 ms.
IVF_NPROBE = 16


def index_kind(count: int) -> str:
    """The engine's index kind for ``count`` vectors: "exact", "hnsw" or "compressed"."""
    if count >= COMPRESSED_MIN_TILES:
        return "compressed"
    return "hnsw" if count >= APPROXIMATE_MIN_TILES else "exact"


def compressed_factory(dim: int, count: int) -> str:
    """The faiss ``index_factory`` string of the compressed kind for ``count`` vectors of ``dim``."""
    lists = 2 ** math.ceil(math.log2(max(math.sqrt(count), 1.0)))
    return f"IVF{lists},{COMPRESSED_CODES}"


def make_faiss_index(vectors: np.ndarray, approximate: bool | None = None):
    """An inner-product faiss index over L2-normalised float32 vectors held in memory.

    ``approximate`` None: the engine's kind for their number; True: HNSW; False: exact.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    kind = index_kind(len(vectors)) if approximate is None else ("hnsw" if approximate else "exact")
    return build_faiss_index(vectors.shape[1], len(vectors), lambda: iter((vectors,)), kind=kind)


def build_faiss_index(dim: int, count: int, chunks: Callable[[], Iterable[np.ndarray]], kind: str | None = None,
                      timings: dict | None = None):
    """The engine's index kind for ``count`` vectors (or ``kind``), filled chunk by chunk from ``chunks()``.

    ``chunks`` is called for a fresh iterator each time it is read (the compressed kind reads a training
    sample first), so a caller streams from disk and never holds every vector at once. Each chunk is a
    float32 [n, dim] array of L2-normalised rows; the chunks together hold exactly ``count`` rows.
    ``timings``, when given, receives the seconds spent training (``train_s``) and adding (``add_s``).
    """
    import time

    import faiss

    kind = kind or index_kind(count)
    started = time.perf_counter()
    if kind == "compressed":
        index = faiss.index_factory(dim, compressed_factory(dim, count), faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(chunks, dim, count, min(count, TRAINING_ROWS_PER_LIST * index.nlist)))
        _set_search(index)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        _set_search(index)
    else:
        index = faiss.IndexFlatIP(dim)
    trained = time.perf_counter()
    exact = _preallocated_vectors(index, count)
    filled = 0
    for chunk in chunks():
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        if exact is not None:
            exact[filled : filled + len(chunk)] = chunk
        elif len(chunk):
            index.add(chunk)
        filled += len(chunk)
    if exact is not None:
        index.ntotal = filled
    if filled != count:
        raise ValueError(f"expected {count} vectors, got {filled}")
    if timings is not None:
        timings.update(train_s=trained - started, add_s=time.perf_counter() - trained)
    return index


def load_faiss_index(path):
    """A faiss index read from ``path`` with the engine's search settings for its kind."""
    import faiss

    index = faiss.read_index(str(path))
    _set_search(index)
    return index


def search_parameters(index, selector=None, selected: int | None = None):
    """faiss search parameters for ``index`` restricted to ``selector`` (None: every vector).

    ``selected``: how many vectors the selector lets through, where known. The compressed kind scans
    the ``IVF_NPROBE`` lists nearest the query; the best tiles of a small selection (a bounding box)
    lie further out, among the query's best ``10 * tiles / selected`` overall, so it scans
    ``sqrt(tiles / selected)`` times as many lists (10x for a selection of 1%), up to all of them.
    """
    import faiss

    if selector is None:
        return None
    if isinstance(index, faiss.IndexHNSWFlat):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH)
    if isinstance(index, faiss.IndexIVF):
        nprobe = IVF_NPROBE
        if selected:
            nprobe = max(nprobe, math.ceil(IVF_NPROBE * math.sqrt(index.ntotal / selected)))
        return faiss.SearchParametersIVF(sel=selector, nprobe=min(nprobe, index.nlist))
    return faiss.SearchParameters(sel=selector)


def reconstructs_exactly(index) -> bool:
    """Whether ``index.reconstruct`` returns the stored float32 vectors themselves (not a decoded code)."""
    import faiss

    return isinstance(index, (faiss.IndexFlat, faiss.IndexHNSWFlat))


def _set_search(index) -> None:
    """The engine's search settings for ``index``'s kind (faiss does not store all of them in the file)."""
    import faiss

    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = IVF_NPROBE


def _training_sample(chunks: Callable[[], Iterable[np.ndarray]], dim: int, count: int, size: int) -> np.ndarray:
    """``size`` rows drawn uniformly without replacement (seeded: the same index for the same vectors)."""
    rows = np.sort(np.random.default_rng(TRAINING_SEED).choice(count, size, replace=False))
    sample = np.empty((size, dim), dtype=np.float32)
    taken = start = 0
    for chunk in chunks():
        end = start + len(chunk)
        upto = int(np.searchsorted(rows, end))
        sample[taken:upto] = chunk[rows[taken:upto] - start]
        taken, start = upto, end
        if taken == size:
            break
    if taken != size:
        raise ValueError(f"expected {count} vectors, got {start}")
    return sample


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
