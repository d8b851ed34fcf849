"""Figure 8: the vector index at collection scale (millions of tiles), the compressed kind of ``core.vectors``.

The tiles are figure 5's: real embeddings of augmented scene tiles by the measured model, expanded
(``bench.search.expanded_rows``: between a real vector and one of its nearest real neighbours, plus
noise) to the size asked for. They are never held at once (10M x 384 float32 is 15 GB): chunk ``j``
is drawn from its own seeded generator, so every pass over the source yields the same vectors, and
the engine's ``build_faiss_index`` reads it as it reads a catalog (a training sample, then every
chunk). Ground truth is exact inner-product top-10, merged chunk by chunk, for figure 5's queries
(held-out augmented tiles and UCM captions) and, for a restricted search, for a contiguous 1% of the
tiles (a bounding box of a collection).

Measured: the engine's kind for the size (``index_kind``) and the compressed kind, its train and
add seconds, its size on disk per tile (faiss writes what it holds in memory), peak RSS, one query
at a time on one faiss thread as ``TileIndex.search`` runs it (p50/p95) and recall@10 per query
kind, at the engine's settings and over an nprobe sweep; restricted search through the engine's
``search_parameters``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import load_average, peak_rss_mib, percentile_ms, target
from .search import (
    ENGINE_QUERY_THREADS,
    LATENCY_TARGET_MS,
    RECALL_TARGET,
    K,
    _latencies,
    _recall,
    _recall_by_kind,
    expanded_rows,
    expansion_plan,
    faiss_threads,
    ucm_captions,
)

CHUNK_ROWS = 250_000  # 366 MiB of float32 384-d rows per chunk
NPROBE_SWEEP = (4, 8, 16, 32, 64, 128)
RESTRICTED_FRACTION = 0.01
TARGET_SIZE = 10_000_000


def synthetic_chunks(base: np.ndarray, size: int, seed: int):
    """A chunk source (``build_faiss_index``'s contract) of ``size`` unit vectors: ``base`` first, then expansion."""
    base = np.ascontiguousarray(base, dtype=np.float32)
    plan = expansion_plan(base)

    def chunks():
        for number, start in enumerate(range(0, size, CHUNK_ROWS)):
            rows = min(CHUNK_ROWS, size - start)
            real = base[start : start + rows]
            extra = expanded_rows(base, plan, rows - len(real), np.random.default_rng([seed, number]))
            yield np.concatenate([real, extra]) if len(real) else extra

    return chunks


def exact_top(queries: np.ndarray, chunks, size: int, restricted: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``K`` row numbers over every row, and over rows ``restricted`` = [start, end), chunk by chunk."""
    import faiss

    best = [(np.full((len(queries), K), -np.inf, np.float32), np.full((len(queries), K), -1)) for _ in range(2)]

    def merge(which: int, block: np.ndarray, offset: int) -> None:
        scores, rows = faiss.knn(queries, np.ascontiguousarray(block), min(K, len(block)),
                                 metric=faiss.METRIC_INNER_PRODUCT)
        all_scores = np.concatenate([best[which][0], scores], axis=1)
        all_rows = np.concatenate([best[which][1], rows + offset], axis=1)
        order = np.argsort(-all_scores, axis=1)[:, :K]
        best[which] = (np.take_along_axis(all_scores, order, 1), np.take_along_axis(all_rows, order, 1))

    start = 0
    for chunk in chunks():
        merge(0, chunk, start)
        low, high = max(restricted[0], start), min(restricted[1], start + len(chunk))
        if low < high:
            merge(1, chunk[low - start : high - start], low)
        start += len(chunk)
    if start != size:
        raise ValueError(f"the source held {start} rows, not {size}")
    return best[0][1], best[1][1]


def _sweep(index, queries: dict[str, np.ndarray], truth: np.ndarray, budget_s: float) -> list[dict[str, Any]]:
    import faiss

    ivf, rows = faiss.extract_index_ivf(index), []
    engine = ivf.nprobe
    both = np.concatenate(list(queries.values()))
    for nprobe in NPROBE_SWEEP:
        ivf.nprobe = nprobe
        found = index.search(both, K)[1]
        times = _latencies(index, both, budget_s / 2)
        rows.append({"nprobe": nprobe, "recall_at_10": _recall(found, truth),
                     "recall_at_10_by_query": _recall_by_kind(found, truth, queries),
                     "p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95)})
    ivf.nprobe = engine
    return rows


def _restricted(index, queries: np.ndarray, truth: np.ndarray, rows: tuple[int, int]) -> dict[str, Any]:
    """One query at a time restricted to rows [start, end), as TileIndex.search restricts to a bounding box."""
    import faiss

    from rs_text_search.core.vectors import search_parameters

    selected = np.arange(*rows, dtype=np.int64)
    params = search_parameters(index, faiss.IDSelectorBatch(selected), selected=len(selected))
    times, found = [], []
    with faiss_threads(ENGINE_QUERY_THREADS):
        for query in queries:
            tick = time.perf_counter()
            found.append(index.search(query[None, :], K, params=params)[1][0])
            times.append(time.perf_counter() - tick)
    found = np.array(found)
    return {"tiles": len(selected), "outside_selection": int(((found >= 0) & ~np.isin(found, selected)).sum()),
            "recall_at_10": _recall(found, truth), "p50_ms": percentile_ms(times, 50),
            "p95_ms": percentile_ms(times, 95)}


def run(model_dir: Path, base: np.ndarray, shared: Path, size: int, n_image_queries: int, n_text_queries: int,
        budget_s: float, work: Path, seed: int = 1, scenes: list | None = None) -> dict[str, Any]:
    import faiss

    from rs_text_search.core import vectors
    from rs_text_search.core.model import load_model

    from .rasters import augmented_tiles, load_scenes

    load_at_start = load_average()
    model = load_model(model_dir, provider="auto")
    scenes = scenes or load_scenes(shared)
    queries = {"image": model.embed_images(augmented_tiles(scenes, n_image_queries, model.image_size, seed + 1000)),
               "text": model.embed_texts(ucm_captions(shared, n_text_queries))}
    both = np.concatenate(list(queries.values()))
    dim = int(base.shape[1])
    chunks = synthetic_chunks(base, size, seed)
    restricted = (size // 2, size // 2 + max(K, int(size * RESTRICTED_FRACTION)))
    started = time.perf_counter()
    truth, truth_restricted = exact_top(both, chunks, size, restricted)
    truth_s = time.perf_counter() - started
    timings: dict[str, float] = {}
    index = vectors.build_faiss_index(dim, size, chunks, kind="compressed", timings=timings)
    path = Path(work) / f"scale-{os.getpid()}.faiss"
    try:
        faiss.write_index(index, str(path))
        index_bytes = path.stat().st_size
    finally:
        path.unlink(missing_ok=True)
    times = _latencies(index, both, budget_s)
    found = index.search(both, K)[1]
    picked = vectors.index_kind(size)
    compressed = {"type": type(index).__name__, "factory": vectors.compressed_factory(dim, size),
                  "lists": faiss.extract_index_ivf(index).nlist, "nprobe": vectors.IVF_NPROBE,
                  "train_s": round(timings["train_s"], 1), "add_s": round(timings["add_s"], 1),
                  "index_bytes": index_bytes, "bytes_per_tile": round(index_bytes / size, 1),
                  "queries_timed": len(times), "p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95),
                  "recall_at_10": _recall(found, truth),
                  "recall_at_10_by_query": _recall_by_kind(found, truth, queries)}
    result = {
        "tiles": size, "real_vectors": len(base), "embed_dim": dim, "chunk_rows": CHUNK_ROWS,
        "queries": {kind: len(block) for kind, block in queries.items()},
        "engine": {"picks": picked, "approximate_min_tiles": vectors.APPROXIMATE_MIN_TILES,
                   "compressed_min_tiles": vectors.COMPRESSED_MIN_TILES},
        "faiss_threads": faiss.omp_get_max_threads(), "ground_truth_s": round(truth_s, 1),
        "compressed": compressed,
        "restricted": _restricted(index, both, truth_restricted, restricted),
        "sweep": _sweep(index, queries, truth, budget_s),
        "peak_rss_mib": peak_rss_mib(),
        "load_average": [load_at_start, load_average()],  # latency on a shared machine depends on it
    }
    result["targets"] = _targets(result)
    return result


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    entry, size = result["compressed"], result["tiles"]
    label = f"compressed index at {size:,} tiles" + ("" if size >= TARGET_SIZE else f" (not {TARGET_SIZE:,})")
    return [
        target(f"p50 latency, {label}", entry["p50_ms"], f"<= {LATENCY_TARGET_MS} ms",
               entry["p50_ms"] <= LATENCY_TARGET_MS if size >= TARGET_SIZE else None),
        target(f"recall@10, {label}", entry["recall_at_10"], f">= {RECALL_TARGET}",
               entry["recall_at_10"] >= RECALL_TARGET if size >= TARGET_SIZE else None),
        target(f"memory per tile, {label}", entry["bytes_per_tile"], "reported", None),
    ]
