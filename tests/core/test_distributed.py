"""Indexing on a real Dask LocalCluster (2 worker processes) equals indexing in-process, tile for tile."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from rs_text_search.cli import main
from rs_text_search.core.errors import Cancelled, ClusterError, RasterError
from rs_text_search.core.index import TileIndex
from rs_text_search.core.indexing import build_index
from rs_text_search.core.sources import open_raster
from rs_text_search.core.tiling import GridSpec
from tests.core.conftest import textured_rgb, write_geotiff, write_sparse

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow  # a LocalCluster takes a few seconds to start

GRID = GridSpec(32)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    from rs_text_search.core.distributed import dask_cluster

    with dask_cluster(workers=2) as running:
        yield running


@pytest.fixture
def rasters(tmp_path):
    """Three rasters: one with an all-nodata and a constant tile, two textured of other sizes."""
    first = np.random.default_rng(0).integers(1, 256, (3, 96, 128), dtype=np.uint8)
    first[:, :32, 96:] = 0  # tile (0, 3) is nodata
    first[:, 32:64, 64:96] = 40  # tile (1, 2) is constant
    return [write_geotiff(tmp_path / "a.tif", first, nodata=0),
            write_geotiff(tmp_path / "b.tif", textured_rgb(100, 130, seed=1)),
            write_geotiff(tmp_path / "c.tif", textured_rgb(64, 200, seed=2), crs=None)]


def in_process(paths, model, root) -> list[TileIndex]:
    indexes = []
    for path in paths:
        with open_raster(path) as source:
            indexes.append(build_index(source, model, GRID, root=root, batch_size=4)[0])
    return indexes


def on_dask(paths, model, cluster, root, **kw):
    from rs_text_search.core.distributed import build_indexes

    sources = [open_raster(path) for path in paths]
    try:
        return build_indexes([(s, GRID) for s in sources], model, cluster, root=root, provider="cpu", batch_size=4,
                             **kw)
    finally:
        for source in sources:
            source.close()


def catalog(index: TileIndex):
    with sqlite3.connect(index.directory / "catalog.sqlite") as db:
        rows = db.execute("SELECT * FROM tiles ORDER BY id").fetchall()
    vectors = {r[0]: np.frombuffer(r[-1], np.float32) for r in rows if r[-1] is not None}
    return [r[:-1] for r in rows], vectors


def assert_same_indexes(expected: list[TileIndex], got: list[TileIndex]) -> None:
    assert [i.directory.name for i in got] == [i.directory.name for i in expected]  # same index keys
    for want, have in zip(expected, got):
        assert have.complete and have.meta["counts"] == want.meta["counts"]
        assert have.meta["grid_shape"] == want.meta["grid_shape"] and have.meta["raster"] == want.meta["raster"]
        rows_want, vectors_want = catalog(want)
        rows_have, vectors_have = catalog(have)
        assert rows_have == rows_want  # tile ids, windows, bounds, corners, statuses
        assert vectors_have.keys() == vectors_want.keys()
        np.testing.assert_allclose(np.stack(list(vectors_have.values())), np.stack(list(vectors_want.values())),
                                   atol=1e-5)
        np.testing.assert_array_equal(np.load(have.directory / "ids.npy"), np.load(want.directory / "ids.npy"))
        assert have.problem(deep=True, thorough=True) is None


def test_dask_indexes_equal_in_process_ones_tile_for_tile(tmp_path, rasters, tiny_model, cluster):
    from distributed import get_task_stream

    from rs_text_search.core import distributed as module

    expected = in_process(rasters, tiny_model, tmp_path / "local")
    seen = []
    with get_task_stream(cluster.client) as stream:
        got = on_dask(rasters, tiny_model, cluster, tmp_path / "dask", chunk_tiles=2,
                      progress=lambda done, total: seen.append((done, total)))
    assert_same_indexes(expected, [index for index, _ in got])
    stats = got[0][1]
    assert (stats.tiles_total, stats.tiles_embedded, stats.tiles_skipped_nodata, stats.tiles_skipped_constant) == \
        (12, 10, 1, 1)
    total = sum(s.tiles_total for _, s in got)
    assert seen[0] == (0, total) and seen[-1] == (total, total) and len(seen) > len(rasters)
    first = f"rs-embed-{got[0][0].key[:8]}-"
    assert len({t["worker"] for t in stream.data if str(t["key"]).startswith(first)}) == 2  # one raster, 2 workers
    assert sorted(cluster.client.run(lambda: len(module._models)).values()) == [1, 1]  # the model, once per worker
    again = on_dask(rasters, tiny_model, cluster, tmp_path / "dask")  # finished: nothing is embedded again
    assert [s.tiles_done_before for _, s in again] == [s.tiles_total for _, s in got]


def test_dask_skips_a_sparse_rasters_empty_blocks_and_goes_on_past_a_raster_that_fails(tmp_path, rasters,
                                                                                        tiny_model, cluster):
    """Empty blocks are marked nodata unread, as in-process; an all-nodata raster fails alone (``failed``)."""
    sparse, _ = write_sparse(tmp_path / "sparse.tif", islands=[(10, 10, 20, 20)], side=600)  # one block of 9 written
    empty, _ = write_sparse(tmp_path / "empty.tif", islands=[], side=300)
    paths = [sparse, empty, rasters[1]]
    with open_raster(sparse) as source:
        local, local_stats = build_index(source, tiny_model, GRID, root=tmp_path / "local", batch_size=4)
    failures = []
    got = on_dask(paths, tiny_model, cluster, tmp_path / "dask", chunk_tiles=8,
                  failed=lambda number, exc: failures.append((number, str(exc))))
    assert got[1] is None and [n for n, _ in failures] == [1] and "no tile with image content" in failures[0][1]
    assert got[0][1].tiles_not_read == local_stats.tiles_not_read == 19 * 19 - 8 * 8  # only block (0, 0) is read
    assert_same_indexes([local], [got[0][0]])
    assert got[2][0].complete
    with pytest.raises(RasterError, match="no tile with image content"):  # without failed: the first failure ends
        on_dask([empty], tiny_model, cluster, tmp_path / "dask")


def test_an_interrupted_dask_run_keeps_its_chunks_and_the_next_run_ends_identical(tmp_path, rasters, tiny_model,
                                                                                    cluster):
    expected = in_process(rasters, tiny_model, tmp_path / "local")
    calls = []

    def cancel_after_two_chunks() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(Cancelled, match="resumes"):
        on_dask(rasters, tiny_model, cluster, tmp_path / "dask", chunk_tiles=3, is_cancelled=cancel_after_two_chunks)
    kept = sum(TileIndex.open(d).counts_total() for d in (tmp_path / "dask" / "indexes").iterdir())
    assert kept == 6  # two chunks of 3 tiles, each one transaction
    got = on_dask(rasters, tiny_model, cluster, tmp_path / "dask", chunk_tiles=3)
    assert sum(s.tiles_done_before for _, s in got) == kept
    assert_same_indexes(expected, [index for index, _ in got])


def test_a_killed_worker_loses_no_tile(tmp_path, tiny_model):
    from rs_text_search.core.distributed import dask_cluster

    path = write_geotiff(tmp_path / "big.tif", textured_rgb(192, 256, seed=3))  # 48 tiles
    expected = in_process([path], tiny_model, tmp_path / "local")
    killed = []
    with dask_cluster(workers=2) as running:
        pids = running.client.run(os.getpid)

        def kill_one_worker(done: int, total: int) -> None:
            if done and not killed:
                killed.append(next(iter(pids.values())))
                os.kill(killed[0], signal.SIGKILL)

        got = on_dask([path], tiny_model, running, tmp_path / "dask", chunk_tiles=2, progress=kill_one_worker)
    assert killed
    assert_same_indexes(expected, [index for index, _ in got])


def test_a_killed_client_keeps_its_chunks_and_an_in_process_run_resumes_them(tmp_path, cache, tiny_model_dir,
                                                                             tiny_model):
    path = write_geotiff(tmp_path / "big.tif", textured_rgb(640, 640, seed=4))  # 400 tiles, 25 chunks
    command = [sys.executable, "-m", "rs_text_search", "index", str(path), "--workers", "2", "--tile-size", "32",
               "--batch-size", "4", "--model", str(tiny_model_dir), "--provider", "cpu", "--json"]
    client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    kept = 0
    try:
        deadline = time.monotonic() + 300
        while not kept and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            for catalog_path in (cache / "indexes").glob("*/catalog.sqlite"):
                with closing(sqlite3.connect(f"{catalog_path.as_uri()}?mode=ro", uri=True)) as db, \
                        contextlib.suppress(sqlite3.OperationalError):  # the schema may not be there yet
                    kept = db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
    finally:
        client.kill()  # SIGKILL: no cleanup of any kind in the client
        client.wait()
    assert 0 < kept < 400
    with open_raster(path) as source:
        index, stats = build_index(source, tiny_model, GRID, batch_size=4)
    assert stats.tiles_done_before >= kept
    assert_same_indexes(in_process([path], tiny_model, tmp_path / "local"), [index])


def test_cli_workers_writes_the_in_process_cache(tmp_path, cache, rasters, tiny_model_dir, tiny_model, capsys):
    expected = in_process(rasters[:2], tiny_model, cache)
    for index in expected:  # the command line must make them again, in the same folders
        for name in ("index.faiss", "catalog.sqlite", "meta.json", "ids.npy"):
            (index.directory / name).unlink(missing_ok=True)
    reference = in_process(rasters[:2], tiny_model, tmp_path / "local")
    code = main(["index", *map(str, rasters[:2]), "--workers", "2", "--tile-size", "32", "--batch-size", "4",
                 "--model", str(tiny_model_dir), "--provider", "cpu", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in rows] == [str(i.directory) for i in expected]
    assert_same_indexes(reference, [TileIndex.open(i.directory) for i in expected])


def test_cli_bad_scheduler_is_one_sentence_at_once(rgb_tif, cache, tiny_model_dir, capsys):
    started = time.perf_counter()
    code = main(["index", str(rgb_tif), "--scheduler", "tcp://127.0.0.1:1", "--model", str(tiny_model_dir)])
    assert code == 2 and time.perf_counter() - started < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: No Dask scheduler answered at 'tcp://127.0.0.1:1'") and len(err) <= 2
    assert main(["index", str(rgb_tif), "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_dask_is_imported_only_when_asked_for(monkeypatch):
    code = "import sys, rs_text_search.cli, rs_text_search.core.distributed; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from rs_text_search.core.distributed import dask_cluster

    monkeypatch.setitem(sys.modules, "distributed", None)  # as on a QGIS without dask
    with pytest.raises(ClusterError, match="dask.distributed"), dask_cluster(workers=1):
        pass


def test_a_worker_refuses_another_raster_file_or_model(tmp_path, rgb_tif, tiny_model, other_model_dir):
    from rs_text_search.core import distributed as module
    from rs_text_search.core.errors import ModelError

    with open_raster(rgb_tif) as source:
        spec = module._WorkerSpec(source.reopen_args(), source.identity(), str(tiny_model.directory),
                                  tiny_model.sha256, "cpu", 4, 1)
    with module._worker_source(spec) as reopened:
        assert (reopened.width, reopened.height) == (130, 100)
    write_geotiff(rgb_tif, textured_rgb(100, 130, seed=5))  # another file at the same path
    with pytest.raises(ClusterError, match="same raster files at the same paths"):
        module._worker_source(spec)
    other = module._WorkerSpec(spec.source_args, spec.identity, str(other_model_dir), tiny_model.sha256, "cpu", 4, 1)
    with pytest.raises(ModelError, match="another model"):
        module._worker_model(other)


def test_a_collection_indexed_on_dask_equals_the_in_process_one(tmp_path, rasters, tiny_model_dir, tiny_model,
                                                                 monkeypatch, capsys):
    """``index --collection NAME FOLDER --workers 2``: the same members, indexes and merged search as in-process;
    a raster of the folder that has no image content is skipped with a warning, on Dask as in-process."""
    from rs_text_search.core.collection import Collection

    write_sparse(rasters[0].parent / "empty.tif", islands=[], side=300)

    common = [str(rasters[0].parent), "--glob", "*.tif", "--tile-size", "32", "--batch-size", "4", "--model",
              str(tiny_model_dir), "--provider", "cpu", "--json"]
    found = {}
    for where, extra in (("dask", ["--workers", "2"]), ("local", [])):
        root = tmp_path / f"cache-{where}"
        monkeypatch.setenv("RS_TEXT_SEARCH_CACHE", str(root))
        assert main(["index", "--collection", "county", *common, *extra]) == 0
        err = capsys.readouterr().err
        assert "warning: skipping" in err and "empty.tif" in err and "no tile with image content" in err
        collection = Collection.load("county", root)
        assert len(collection.members) == 3
        assert main(["search", "a river", "--collection", "county", "--top-k", "12", "--model", str(tiny_model_dir),
                     "--provider", "cpu", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        found[where] = (sorted((m["raster"], m["key"], m["tiles"]) for m in collection.members),
                        [(h["tile_id"], round(h["score"], 5)) for h in hits],
                        collection.member_indexes(root)[0])
    assert found["dask"][0] == found["local"][0]  # same rasters, index keys and tile counts
    assert found["dask"][1] == found["local"][1]  # the merged index answers the same, tile for tile
    assert_same_indexes(found["local"][2], found["dask"][2])
