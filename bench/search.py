"""Figure 5: search latency and recall@10 at 10k, 100k and 1M tiles, exact versus approximate.

Vectors are embeddings of real scene tiles made by the measured model: the tiles of the large
mosaic of figure 2 (augmented crops of the shared scenes at several scales, rotations, flips and
colour jitter), as the engine stored them. Encoding a million tiles takes hours on a laptop CPU,
so larger sets are *expanded* from those real embeddings: each extra vector lies between a real
embedding and one of its ``EXPAND_NEIGHBOURS`` nearest real neighbours (uniform weight), plus
isotropic Gaussian noise of norm ``EXPAND_NOISE`` x that embedding's nearest-neighbour distance,
re-normalised. This keeps the real vectors' cluster structure and intrinsic dimension (unlike
uniform random vectors, which make approximate indexes look worse than they are); the noise
errs on the hard side. The participation ratio (effective dimension) of the real vectors is
reported, since recall depends on it.

Queries: held-out augmented tiles (embedded by the model; a "find similar" search) and UCM
captions (embedded by the text encoder; a text search). Ground truth is exact inner-product
search. For each size (and for the real vectors alone): the exact index and the approximate one, both from the engine's
``make_faiss_index``; latency of one query at a time (p50/p95, ms; on one faiss thread, as
``TileIndex.search`` runs a single query, and with faiss's default threads), recall@10, build seconds,
which one the engine picks, and an ``efSearch`` sweep of the approximate index. The end-to-end
text query (tokenise + text encoder + search on the engine's pick at the largest size) is timed
per caption, with the engine's default ONNX Runtime threads and with one thread. An exact-search
latency sweep over more sizes locates the switch-over size; optionally (``--full``) HNSW graphs
with other parameters are built at the largest size, to see what reaching the recall target costs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .common import percentile_ms, target

K = 10
EXPAND_NEIGHBOURS = 10
EXPAND_NOISE = 0.25
EF_SWEEP = (16, 32, 64, 128, 256, 512, 1024, 2048)
VARIANT_EF = (128, 512, 2048)
LATENCY_TARGET_MS = 10.0
RECALL_TARGET = 0.95
QUERY_TARGET_MS = 50.0
TARGET_SIZE = 1_000_000
ENGINE_QUERY_THREADS = 1  # TileIndex.search runs a single query on one faiss thread


def participation_ratio(vectors: np.ndarray) -> float:
    """Effective dimension of a point cloud: (sum of variances)^2 / sum of squared variances."""
    centred = vectors - vectors.mean(axis=0)
    variances = np.linalg.svd(centred[:20000], compute_uv=False) ** 2
    return round(float(variances.sum() ** 2 / (variances**2).sum()), 2)


def expansion_plan(base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each real vector's ``EXPAND_NEIGHBOURS`` nearest real neighbours and its nearest-neighbour distance."""
    import faiss

    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    similarity, neighbours = exact.search(base, EXPAND_NEIGHBOURS + 1)
    return neighbours, np.sqrt(np.maximum(2.0 - 2.0 * similarity[:, 1], 0.0))  # unit vectors


def expanded_rows(base: np.ndarray, plan: tuple[np.ndarray, np.ndarray], n: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``n`` expanded unit vectors (module docstring), drawn from ``rng``."""
    neighbours, nearest_distance = plan
    first = rng.integers(0, len(base), n)
    second = neighbours[first, rng.integers(1, EXPAND_NEIGHBOURS + 1, n)]
    weight = rng.random(n, dtype=np.float32)[:, None]
    noise = rng.standard_normal((n, base.shape[1]), dtype=np.float32)
    noise *= (EXPAND_NOISE * nearest_distance[first] / np.sqrt(base.shape[1]))[:, None]
    chunk = weight * base[first] + (1.0 - weight) * base[second] + noise
    return chunk / np.linalg.norm(chunk, axis=1, keepdims=True)


def expand(base: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` unit vectors: the real ``base`` vectors (a random subset when fewer are wanted) plus expansion."""
    rng = np.random.default_rng(seed)
    base = np.ascontiguousarray(base, dtype=np.float32)
    if size <= len(base):
        return base[np.sort(rng.choice(len(base), size, replace=False))]
    plan = expansion_plan(base)
    out = np.empty((size, base.shape[1]), dtype=np.float32)
    out[: len(base)] = base
    for start in range(len(base), size, 100_000):
        n = min(100_000, size - start)
        out[start : start + n] = expanded_rows(base, plan, n, rng)
    return out


def ucm_captions(shared: Path, count: int) -> list[str]:
    data = json.loads((Path(shared) / "data" / "ucm_captions" / "dataset.json").read_text(encoding="utf-8"))
    captions = [s["raw"] for image in data["images"] if image["split"] == "val" for s in image["sentences"]]
    step = max(1, len(captions) // count)
    return captions[::step][:count]


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """faiss's OpenMP threads inside the block (None: leave faiss's default, all cores)."""
    import faiss

    before = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _latencies(index, queries: np.ndarray, budget_s: float, threads: int | None = ENGINE_QUERY_THREADS) -> list[float]:
    """Seconds per single-query search, for as many queries as fit in ``budget_s`` (at least 5)."""
    times: list[float] = []
    with faiss_threads(threads):
        started = time.perf_counter()
        for i, query in enumerate(queries):
            tick = time.perf_counter()
            index.search(query[None, :], K)
            times.append(time.perf_counter() - tick)
            if i >= 4 and time.perf_counter() - started > budget_s:
                break
    return times


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)])), 4)


def _recall_by_kind(found: np.ndarray, truth: np.ndarray, queries: dict[str, np.ndarray]) -> dict[str, float]:
    """recall@10 per query kind; ``found`` and ``truth`` hold the kinds' queries in ``queries`` order."""
    by_kind, offset = {}, 0
    for kind, block in queries.items():
        by_kind[kind] = _recall(found[offset : offset + len(block)], truth[offset : offset + len(block)])
        offset += len(block)
    return by_kind


def _measure_size(vectors: np.ndarray, queries: dict[str, np.ndarray], budget_s: float) -> dict[str, Any]:
    from rs_text_search.core.index import APPROXIMATE_MIN_TILES, make_faiss_index

    all_queries = np.concatenate(list(queries.values()))
    started = time.perf_counter()
    exact = make_faiss_index(vectors, approximate=False)
    exact_build = time.perf_counter() - started
    _, truth = exact.search(all_queries, K)
    exact_times = _latencies(exact, all_queries, budget_s)
    exact_default = _latencies(exact, all_queries, budget_s, threads=None)
    started = time.perf_counter()
    approx = make_faiss_index(vectors, approximate=True)
    approx_build = time.perf_counter() - started
    default_ef = approx.hnsw.efSearch
    approx_times = _latencies(approx, all_queries, budget_s)
    approx_default = _latencies(approx, all_queries, budget_s, threads=None)
    _, found = approx.search(all_queries, K)
    recalls = _recall_by_kind(found, truth, queries)
    sweep = []
    for ef in EF_SWEEP:
        approx.hnsw.efSearch = ef
        _, found_ef = approx.search(all_queries, K)
        times = _latencies(approx, all_queries, budget_s / 4)
        by_kind = _recall_by_kind(found_ef, truth, queries)
        sweep.append({"ef_search": ef, "recall_at_10": _recall(found_ef, truth), "recall_at_10_by_query": by_kind,
                      "p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95)})
    approx.hnsw.efSearch = default_ef
    picked = "approximate" if len(vectors) >= APPROXIMATE_MIN_TILES else "exact"
    return {
        "tiles": len(vectors),
        "engine_picks": picked,
        "exact": {"type": type(exact).__name__, "build_s": round(exact_build, 2), "queries_timed": len(exact_times),
                  "p50_ms": percentile_ms(exact_times, 50), "p95_ms": percentile_ms(exact_times, 95),
                  "p50_ms_faiss_default_threads": percentile_ms(exact_default, 50),
                  "p95_ms_faiss_default_threads": percentile_ms(exact_default, 95), "recall_at_10": 1.0},
        "approximate": {"type": type(approx).__name__, "build_s": round(approx_build, 2), "ef_search": default_ef,
                        "queries_timed": len(approx_times), "p50_ms": percentile_ms(approx_times, 50),
                        "p95_ms": percentile_ms(approx_times, 95),
                        "p50_ms_faiss_default_threads": percentile_ms(approx_default, 50),
                        "p95_ms_faiss_default_threads": percentile_ms(approx_default, 95),
                        "recall_at_10": _recall(found, truth),
                        "recall_at_10_by_query": recalls},
        "ef_sweep": sweep,
        "_indexes": {"exact": exact, "approximate": approx},
        "_truth": truth,
    }


def _hnsw_variant(vectors: np.ndarray, queries: dict[str, np.ndarray], truth: np.ndarray, neighbours: int,
                  ef_construction: int, budget_s: float) -> dict[str, Any]:
    """HNSW with other graph parameters than the engine's, built like ``make_faiss_index`` builds it."""
    import faiss

    all_queries = np.concatenate(list(queries.values()))
    index = faiss.IndexHNSWFlat(vectors.shape[1], neighbours, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    started = time.perf_counter()
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    build = time.perf_counter() - started
    sweep = []
    for ef in VARIANT_EF:
        index.hnsw.efSearch = ef
        _, found = index.search(all_queries, K)
        by_kind = _recall_by_kind(found, truth, queries)
        times = _latencies(index, all_queries, budget_s / 4)
        sweep.append({"ef_search": ef, "recall_at_10": _recall(found, truth), "recall_at_10_by_query": by_kind,
                      "p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95)})
    return {"hnsw_m": neighbours, "ef_construction": ef_construction, "build_s": round(build, 1), "ef_sweep": sweep}


def _query_latency(model, captions: list[str], index) -> dict[str, Any]:
    """Per-caption ms: tokenise, text encoder (tokenise included) and the whole query with search."""
    model.embed_texts(captions[:2])  # warm-up
    tokenise, encode, total = [], [], []
    for caption in captions:
        tick = time.perf_counter()
        model.tokenize([caption])
        tokenise.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        vector = model.embed_texts([caption])
        encode.append(time.perf_counter() - tick)
        with faiss_threads(ENGINE_QUERY_THREADS):
            index.search(vector, K)
        total.append(time.perf_counter() - tick)
    return {"queries": len(captions),
            "tokenise_p50_ms": percentile_ms(tokenise, 50), "text_encoder_p50_ms": percentile_ms(encode, 50),
            "p50_ms": percentile_ms(total, 50), "p95_ms": percentile_ms(total, 95)}


def run(model_dir: Path, base: np.ndarray, shared: Path, sizes: list[int], flat_sizes: list[int],
        n_image_queries: int, n_text_queries: int, budget_s: float, seed: int = 1,
        scenes: list | None = None, hnsw_variants: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    import faiss

    from rs_text_search.core.index import APPROXIMATE_MIN_TILES, HNSW_EF_CONSTRUCTION, HNSW_NEIGHBOURS
    from rs_text_search.core.model import load_model

    from .rasters import augmented_tiles, load_scenes

    model = load_model(model_dir, provider="auto")
    scenes = scenes or load_scenes(shared)
    image_queries = model.embed_images(augmented_tiles(scenes, n_image_queries, model.image_size, seed + 1000))
    captions = ucm_captions(shared, n_text_queries)
    queries = {"image": image_queries, "text": model.embed_texts(captions)}
    largest = expand(base, max(sizes + flat_sizes), seed)
    result: dict[str, Any] = {
        "real_vectors": len(base),
        "effective_dimension_real": participation_ratio(base),
        "embed_dim": int(base.shape[1]),
        "expansion": {"neighbours": EXPAND_NEIGHBOURS, "noise": EXPAND_NOISE},
        "queries": {kind: len(block) for kind, block in queries.items()},
        "engine": {"approximate_min_tiles": APPROXIMATE_MIN_TILES, "hnsw_m": HNSW_NEIGHBOURS,
                   "hnsw_ef_construction": HNSW_EF_CONSTRUCTION},
        "faiss_threads": faiss.omp_get_max_threads(),
        "sizes": [],
    }
    last_indexes, last_vectors = None, None
    for size in sorted(set(sizes) | {len(base)}):  # plus the real vectors alone, free of the expansion
        # Nested sets: the first ``size`` rows of the largest set (real vectors first, then expansion).
        measured = _measure_size(largest[:size] if size > len(base) else expand(base, size, seed), queries,
                                 budget_s)
        measured["real_only"] = size <= len(base)
        last_indexes, last_truth = measured.pop("_indexes"), measured.pop("_truth")
        last_vectors = largest[:size] if size > len(base) else None
        result["sizes"].append(measured)
    if hnsw_variants and last_vectors is not None:
        result["hnsw_variants"] = {"tiles": len(last_vectors), "variants": [
            _hnsw_variant(last_vectors, queries, last_truth, m, efc, budget_s) for m, efc in hnsw_variants]}
    flat = []
    for size in sorted(flat_sizes):
        index = faiss.IndexFlatIP(largest.shape[1])
        index.add(largest[:size])
        both = np.concatenate(list(queries.values()))
        times = _latencies(index, both, budget_s / 2)
        default = _latencies(index, both, budget_s / 2, threads=None)
        flat.append({"tiles": size, "p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95),
                     "p50_ms_faiss_default_threads": percentile_ms(default, 50),
                     "p95_ms_faiss_default_threads": percentile_ms(default, 95)})
        del index
    result["exact_latency_sweep"] = flat
    if last_indexes is not None:
        top = result["sizes"][-1]
        index = last_indexes[top["engine_picks"]]
        single = load_model(model_dir, provider="auto", threads=1)
        result["end_to_end_text_query"] = {"tiles": top["tiles"], "index": top["engine_picks"],
                                           **_query_latency(model, captions, index),
                                           "one_thread": _query_latency(single, captions, index)}
    result["targets"] = _targets(result)
    return result


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    at_target = [s for s in result["sizes"] if s["tiles"] >= TARGET_SIZE]
    top = at_target[0] if at_target else (result["sizes"][-1] if result["sizes"] else None)
    label = f"at {top['tiles']:,} tiles" if top else "(no size measured)"
    note = "" if at_target else f" (not {TARGET_SIZE:,}: run with --full)"
    picked = top[top["engine_picks"]] if top else None
    e2e = result.get("end_to_end_text_query", {}).get("p50_ms")
    return [
        target(f"p50 latency, engine's pick, {label}{note}", picked and picked["p50_ms"], f"<= {LATENCY_TARGET_MS} ms",
               None if not picked else picked["p50_ms"] <= LATENCY_TARGET_MS),
        target(f"recall@10, engine's pick, {label}{note}", picked and picked["recall_at_10"], f">= {RECALL_TARGET}",
               None if not picked else picked["recall_at_10"] >= RECALL_TARGET),
        target(f"end-to-end text query p50, {label}{note}", e2e, f"<= {QUERY_TARGET_MS} ms",
               None if e2e is None else e2e <= QUERY_TARGET_MS),
    ]
