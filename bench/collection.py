"""Figure 6: a collection of many rasters searched as one merged index, against one index of the same tiles.

Members are per-raster indexes of ``TILES_PER_MEMBER`` tiles each, written by the engine's own code (a
``TileIndex`` catalog filled with the indexer's row writer, then ``finalize``) from real-model embeddings:
the bench's real vectors (figure 5's), expanded the same way to the number of tiles needed. Encoding
10,000 rasters would take hours on the bench machine and is not what is measured: only searching is.
The members of the largest size are written once into ``<work>/collection/`` and reused by later runs
(the smaller sizes search the first N of them); the single index of each size holds the same vectors.

For each number of members N: the warm text query p50/p95 (``Searcher.search_text``, top 10: tokenise,
text encoder, the merged faiss search, the hits' catalog rows), the same with the query vector given
(search alone), against one index of the same N x ``TILES_PER_MEMBER`` tiles through the same
``Searcher``; and what opening costs: checking the members in full and building the merged index (first
search ever), then opening them again as the next process does (``Collection.member_indexes``: each
member's files stat'ed against the merged index's record of them, the merged index loaded; its share of
loading the merged index shown apart). Up to ``PER_INDEX_LOOP_MAX`` members the former path, one faiss
search per member index, is timed too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import percentile_ms, ratio, target

TILES_PER_MEMBER = 10  # 10,000 members x 10 tiles: the 100,000 tiles of the comparison
GRID_COLS = 5
TILE_PX = 32
PER_INDEX_LOOP_MAX = 1_000
RATIO_TARGET = 2.0
WARM_UP = 5


def _index_key(name: str, model_sha256: str) -> str:
    return hashlib.sha256(f"bench-collection:{name}:{model_sha256}".encode()).hexdigest()[:24]


def write_index(root: Path, name: str, vectors: np.ndarray, model, x0: float):
    """A finished index of ``vectors`` (one per tile, row-major on a grid ``GRID_COLS`` wide), written by the
    engine's code; the raster is an online-style identity (no file to stat), ``x0`` its left edge."""
    from rs_text_search.core.index import META_VERSION, STATUS, TileIndex
    from rs_text_search.core.pipeline import write_rows
    from rs_text_search.core.tiling import GridSpec

    rows_n, cols = len(vectors) // GRID_COLS, GRID_COLS
    key = _index_key(name, model.sha256)
    folder = root / "indexes" / key
    transform = [x0, 1.0, 0.0, 0.0, 0.0, -1.0]
    meta = {"version": META_VERSION, "key": key, "complete": False,
            "raster": {"uri": f"bench://{name}", "name": name, "identity": {"source": f"bench://{name}", "bands": None},
                       "width": cols * TILE_PX, "height": rows_n * TILE_PX, "crs_wkt": None, "transform": transform},
            "model": {"name": model.name, "sha256": model.sha256, "embed_dim": model.embed_dim,
                      "image_size": model.image_size},
            "grid": GridSpec(TILE_PX).to_dict(), "grid_shape": [rows_n, cols],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    folder.mkdir(parents=True, exist_ok=True)
    index = TileIndex(folder, meta)
    rows = []
    for tile, vector in enumerate(vectors):
        row, col = divmod(tile, cols)
        minx, maxy = x0 + col * TILE_PX, -row * TILE_PX
        rows.append((tile, row, col, col * TILE_PX, row * TILE_PX, TILE_PX, TILE_PX, minx, maxy - TILE_PX,
                     minx + TILE_PX, maxy, None, STATUS["embedded"], vector.astype(np.float32).tobytes()))
    db = index.connect()
    try:
        write_rows(db, rows)
    finally:
        db.close()
    index.write_meta()
    index.finalize()
    return index


def _members(work: Path, vectors: np.ndarray, count: int, model) -> tuple[Path, float]:
    """The cache holding ``count`` member indexes (reused when a previous run wrote the same), and the seconds
    spent writing them (0 when reused)."""
    root = work / "collection" / "members"
    stamp = {"model": model.sha256, "members": count, "tiles_per_member": TILES_PER_MEMBER,
             "vectors_sha256": hashlib.sha256(vectors[: count * TILES_PER_MEMBER].tobytes()).hexdigest()}
    marker = root / "members.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return root, 0.0
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    for number in range(count):
        block = vectors[number * TILES_PER_MEMBER : (number + 1) * TILES_PER_MEMBER]
        write_index(root, f"member{number:05d}", block, model, x0=number * GRID_COLS * TILE_PX * 2.0)
    marker.write_text(json.dumps(stamp))
    return root, time.perf_counter() - started


def _query_times(searcher, captions: list[str], vectors: np.ndarray) -> dict[str, Any]:
    """Warm p50/p95 of whole text queries, and of the search alone for the same query vectors."""
    for caption in captions[:WARM_UP]:
        searcher.search_text(caption)
    whole, alone = [], []
    for caption, vector in zip(captions, vectors):
        tick = time.perf_counter()
        searcher.search_text(caption)
        whole.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        searcher._results(searcher._search_vector(vector, 10, None, None), 10, None, set())
        alone.append(time.perf_counter() - tick)
    return {"p50_ms": percentile_ms(whole, 50), "p95_ms": percentile_ms(whole, 95),
            "search_only_p50_ms": percentile_ms(alone, 50), "search_only_p95_ms": percentile_ms(alone, 95)}


def _per_index_loop(searcher, vectors: np.ndarray) -> dict[str, Any]:
    """The former path: one faiss search per member index, the hits merged by score, then the same results."""
    for member in searcher.indexes:
        member.search(vectors[:1], 10)  # loads every member's faiss index
    times = []
    for vector in vectors:
        tick = time.perf_counter()
        hits = []
        for member in searcher.indexes:
            scores, tiles = member.search(vector[None, :], 10)
            hits += [(float(s), member, int(t)) for s, t in zip(scores[0], tiles[0]) if t >= 0]
        hits.sort(key=lambda hit: -hit[0])
        searcher._results(hits, 10, None, set())
        times.append(time.perf_counter() - tick)
    return {"search_only_p50_ms": percentile_ms(times, 50), "search_only_p95_ms": percentile_ms(times, 95)}


def _measure(count: int, members_root: Path, single_root: Path, vectors: np.ndarray, model, captions,
             query_vectors) -> dict[str, Any]:
    from rs_text_search.core import merged as merged_module
    from rs_text_search.core.index import TileIndex
    from rs_text_search.core.scan import check_index
    from rs_text_search.core.search import Searcher

    keys = [_index_key(f"member{n:05d}", model.sha256) for n in range(count)]
    merged_dir = members_root.parent / "merged" / str(count)
    shutil.rmtree(merged_dir, ignore_errors=True)

    def open_members() -> list[TileIndex]:  # as Collection.member_indexes (deep checks, rasters' stat)
        verified = merged_module.verified_members(merged_dir)
        found = [check_index(members_root / "indexes" / key, model.sha256, True, True, verified.get(key))
                 for key in keys]
        assert all(isinstance(member, TileIndex) for member in found), "a bench member failed its checks"
        return found

    started = time.perf_counter()
    members = open_members()
    open_s = time.perf_counter() - started  # no merged index yet: every member checked in full
    searcher = Searcher(model, members, merged_dir=merged_dir)
    started = time.perf_counter()
    _ = searcher.merged
    build_s = time.perf_counter() - started
    merged_module._OPEN.clear()  # as a new process: the members and the merged index from disk
    started = time.perf_counter()
    members = open_members()
    reopen_members_s = time.perf_counter() - started
    searcher = Searcher(model, members, merged_dir=merged_dir)
    _ = searcher.merged
    reopen_s = time.perf_counter() - started
    load_s = reopen_s - reopen_members_s
    collection = _query_times(searcher, captions, query_vectors)
    shutil.rmtree(single_root, ignore_errors=True)
    single_index = write_index(single_root, f"single{count}", vectors[: count * TILES_PER_MEMBER], model, 0.0)
    single = _query_times(Searcher(model, [single_index]), captions, query_vectors)
    loop = _per_index_loop(searcher, query_vectors) if count <= PER_INDEX_LOOP_MAX else None
    shutil.rmtree(single_root, ignore_errors=True)
    return {"members": count, "tiles": count * TILES_PER_MEMBER,
            "index_type": searcher.merged.merged.record["index_type"], "open_verify_s": round(open_s, 2),
            "merged_build_s": round(build_s, 2), "merged_load_s": round(load_s, 3),
            "reopen_members_s": round(reopen_members_s, 3), "reopen_s": round(reopen_s, 2),
            "collection": collection, "single_index": single, "per_index_loop": loop,
            "ratio_p50": ratio(collection["p50_ms"], single["p50_ms"]),
            "ratio_search_only_p50": ratio(collection["search_only_p50_ms"], single["search_only_p50_ms"])}


def run(model_dir: Path, base: np.ndarray, shared: Path, work: Path, sizes: list[int], n_queries: int,
        seed: int = 3) -> dict[str, Any]:
    from rs_text_search.core.model import load_model

    from .search import expand, ucm_captions

    model = load_model(model_dir, provider="auto")
    largest = max(sizes)
    vectors = expand(base, largest * TILES_PER_MEMBER, seed)
    members_root, write_s = _members(work, vectors, largest, model)
    captions = ucm_captions(shared, n_queries)
    query_vectors = model.embed_texts(captions)
    result: dict[str, Any] = {"tiles_per_member": TILES_PER_MEMBER, "real_vectors": len(base),
                              "queries": len(captions), "members_written_s": round(write_s, 1),
                              "sizes": [_measure(n, members_root, work / "collection" / "single", vectors, model,
                                                 captions, query_vectors) for n in sorted(sizes)]}
    top = result["sizes"][-1]
    result["targets"] = [target(f"warm text query p50, {top['members']:,} rasters vs one index of {top['tiles']:,} "
                                "tiles", top["ratio_p50"], f"<= {RATIO_TARGET}x",
                                None if top["ratio_p50"] is None else top["ratio_p50"] <= RATIO_TARGET)]
    return result
