"""Figure "distributed": indexing the bench rasters in-process against a Dask LocalCluster of 2 workers.

The rasters are ``RASTERS`` generated mosaics of the small size (:func:`bench.rasters.ensure_mosaic`,
seeds 0, 1, 2), cut into tiles of the model's input size like figures 2-4. Each case indexes all of them
into a fresh cache folder, in this order: in-process (``build_index``, the engine's defaults), on Dask cold
(a LocalCluster just started: its workers load the model on their first chunk), on Dask warm (the same
cluster again, the model loaded), in-process again; the two in-process runs are averaged, so load that
drifts over the figure weighs on both sides. Tiles/s count every tile of the grids; the cluster's start
is timed on its own. Then the per-raster indexes of the last Dask run are compared with the in-process
ones tile for tile: index keys, catalog rows (ids, windows, bounds, corners, statuses) and embeddings.

On the 2-core development machine two worker processes share the cores the in-process pipeline already
keeps busy (reader threads beside the encoder), so a ratio below 1 there measures Dask's overhead, not
its scale-out; more cores or machines are where the workers add throughput.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import git_commit, load_average, ratio, target

RASTERS = 3
WORKERS = 2


def run(model_dir: Path, work: Path, size_px: int, shared: Path, scenes=None) -> dict[str, Any]:
    from rs_text_search.core.distributed import build_indexes, dask_cluster
    from rs_text_search.core.indexing import build_index
    from rs_text_search.core.model import load_model
    from rs_text_search.core.sources import RasterioSource
    from rs_text_search.core.tiling import GridSpec

    from .rasters import ensure_mosaic

    rasters = [ensure_mosaic(work, size_px, scenes, shared=shared, seed=seed) for seed in range(RASTERS)]
    paths = [path for path, _ in rasters]
    model = load_model(model_dir, provider="auto")
    grid = GridSpec(tile_size_px=model.image_size)
    scratch = Path(tempfile.mkdtemp(prefix="distributed-", dir=work))
    measured = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": git_commit().get("commit"),
                "load_average_start": load_average()}
    cases: dict[str, dict[str, Any]] = {}

    def timed(name: str, index_all) -> list:
        root = scratch / name
        started = time.perf_counter()
        indexes = index_all(root)
        seconds = time.perf_counter() - started
        tiles = sum(stats.tiles_total for _, stats in indexes)
        cases[name] = {"tiles": tiles, "seconds": round(seconds, 2), "tiles_per_s": round(tiles / seconds, 2)}
        return [index for index, _ in indexes]

    def in_process(root: Path) -> list:
        results = []
        for path in paths:
            with RasterioSource(path) as source:
                results.append(build_index(source, model, grid, root=root))
        return results

    def on_dask(cluster):
        def index_all(root: Path) -> list:
            sources = [RasterioSource(path) for path in paths]
            try:
                return build_indexes([(s, grid) for s in sources], model, cluster, root=root, provider="auto")
            finally:
                for source in sources:
                    source.close()
        return index_all

    try:
        expected = timed("in_process_1", in_process)
        started = time.perf_counter()
        with dask_cluster(workers=WORKERS) as cluster:
            cluster_start_s = round(time.perf_counter() - started, 2)
            timed("dask_cold", on_dask(cluster))
            got = timed("dask_warm", on_dask(cluster))
        timed("in_process_2", in_process)
        comparison = compare_indexes(expected, got)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    measured["load_average_end"] = load_average()
    local = (cases["in_process_1"]["tiles_per_s"] + cases["in_process_2"]["tiles_per_s"]) / 2
    identical = comparison["same_keys"] and comparison["same_rows"] and comparison["max_abs_diff"] <= 1e-5
    return {
        "measured": measured,  # the figure may be merged into a run measured at another time
        "rasters": [info for _, info in rasters],
        "tile_px": grid.tile_size_px,
        "workers": WORKERS,
        "ort_threads_per_worker": cluster.ort_threads,
        "cores": os.cpu_count(),
        "provider": model.provider,
        "cluster_start_s": cluster_start_s,
        "cases": cases,
        "in_process_tiles_per_s": round(local, 2),
        "ratio_cold": ratio(cases["dask_cold"]["tiles_per_s"], local),
        "ratio_warm": ratio(cases["dask_warm"]["tiles_per_s"], local),
        "comparison": comparison,
        "targets": [target(f"Dask LocalCluster ({WORKERS} workers) indexes equal to in-process ones, tile for tile",
                           "yes" if identical else "no", "yes", identical)],
    }


def compare_indexes(expected: list, got: list) -> dict[str, Any]:
    """Index keys, catalog rows (all but the embedding) and the largest embedding difference of two runs."""
    same_rows, max_diff = True, 0.0
    for want, have in zip(expected, got):
        rows = []
        for index in (want, have):
            with sqlite3.connect(index.directory / "catalog.sqlite") as db:
                rows.append(db.execute("SELECT * FROM tiles ORDER BY id").fetchall())
        same_rows &= [r[:-1] for r in rows[0]] == [r[:-1] for r in rows[1]]
        vectors = [np.array([np.frombuffer(r[-1], np.float32) for r in side if r[-1] is not None]) for side in rows]
        if same_rows and vectors[0].shape == vectors[1].shape and vectors[0].size:
            max_diff = max(max_diff, float(np.abs(vectors[0] - vectors[1]).max()))
    return {"same_keys": [i.directory.name for i in expected] == [i.directory.name for i in got],
            "same_rows": bool(same_rows), "max_abs_diff": max_diff,
            "tiles": sum(len(np.load(i.directory / "ids.npy")) for i in got)}
