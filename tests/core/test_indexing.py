"""Indexing real GeoTIFFs with a real (tiny) ONNX model: counts, caching, resume, bad rasters."""

import sqlite3

import numpy as np
import pytest

from rs_text_search.core.errors import CacheError, Cancelled, IndexMismatchError, RasterError
from rs_text_search.core.index import TileIndex, list_indexes, make_faiss_index
from rs_text_search.core.indexing import build_index
from rs_text_search.core.search import Searcher
from rs_text_search.core.sources import open_raster
from rs_text_search.core.tiling import GridSpec
from tests.core.conftest import tiles_raster, write_geotiff

SEEDS = [[1, 2, 3, 4], [5, 6, -1, 7], [8, 1, 9, 10]]  # tile (2,1) repeats tile (0,0); (1,2) is constant


def test_index_counts_skips_and_stores_every_tile(tmp_path, cache, tiny_model):
    data = np.random.default_rng(0).integers(0, 256, (3, 96, 128), dtype=np.uint8)
    data[:, :32, 96:] = 0  # one tile all nodata
    data[:, 32:64, 64:96] = 40  # one tile constant
    path = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    with open_raster(path) as source:
        index, stats = build_index(source, tiny_model, batch_size=4)
    assert (stats.tiles_total, stats.tiles_embedded) == (12, 10)
    assert (stats.tiles_skipped_nodata, stats.tiles_skipped_constant) == (1, 1)
    assert index.complete and len(index) == 10
    assert index.counts() == {"embedded": 10, "nodata": 1, "constant": 1}
    record = index.records([5])[5]
    assert record.window == (32, 32, 32, 32) and record.tile_id == index.tile_id(5)
    assert record.bounds == (500032.0, 3999936.0, 500064.0, 3999968.0)
    lon, lat = record.corners_lonlat[0]
    assert 14.9 < lon < 15.1 and 36.0 < lat < 36.2
    assert [i.directory for i in list_indexes(cache)] == [index.directory]


def test_stored_vectors_equal_encoding_the_tiles_directly(tmp_path, cache, tiny_model, monkeypatch):
    monkeypatch.setattr("rs_text_search.core.index.FINALIZE_CHUNK_TILES", 4)  # finalize streams 3 chunks
    path = tiles_raster(tmp_path / "t.tif", 32, SEEDS)
    with open_raster(path) as source:
        index, _ = build_index(source, tiny_model)
        direct = tiny_model.embed_images([source.read(index_window(index, t), 32) for t in (0, 4, 11)])
    np.testing.assert_allclose(index.vectors([0, 4, 11]), direct, atol=1e-5)
    np.testing.assert_allclose(index.vectors([0]), index.vectors([9]), atol=1e-6)  # identical pixels
    assert len(index) == 11 and list(index._load()[1]) == [t for t in range(12) if t != 6]
    reopened = TileIndex.open(index.directory)  # what finalize wrote to index.faiss, read back
    np.testing.assert_array_equal(reopened.vectors([0, 4, 11]), index.vectors([0, 4, 11]))
    scores, found = reopened.search(direct[1:2], 3)
    assert found[0][0] == 4 and scores[0][0] == pytest.approx(1.0, abs=1e-5)


def index_window(index, tile_index):
    from rs_text_search.core.tiling import Window

    return Window(*index.records([tile_index])[tile_index].window)


def test_reindexing_unchanged_raster_is_instant_and_changes_make_a_new_index(tmp_path, cache, tiny_model):
    path = tiles_raster(tmp_path / "t.tif", 32, SEEDS)
    with open_raster(path) as source:
        first, _ = build_index(source, tiny_model)
        again, stats = build_index(source, tiny_model)
        other_grid, _ = build_index(source, tiny_model, GridSpec(32, overlap=0.5))
    assert again.directory == first.directory and stats.seconds == 0.0 and stats.tiles_done_before == 12
    assert other_grid.directory != first.directory
    tiles_raster(path, 32, [[s + 20 if s > 0 else s for s in row] for row in SEEDS])  # rewrite the pixels
    with open_raster(path) as source:
        changed, _ = build_index(source, tiny_model)
    assert changed.directory != first.directory


def test_cancel_keeps_finished_batches_and_resume_completes(tmp_path, cache, tiny_model):
    path = tiles_raster(tmp_path / "t.tif", 32, SEEDS)
    calls = []

    def cancel_after_two_batches():
        calls.append(1)
        return len(calls) > 2

    with open_raster(path) as source, pytest.raises(Cancelled, match="resumes"):
        build_index(source, tiny_model, batch_size=2, readers=1, is_cancelled=cancel_after_two_batches)
    (folder,) = (cache / "indexes").iterdir()
    with sqlite3.connect(folder / "catalog.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == 4
    assert not TileIndex.open(folder).complete
    seen = []
    with open_raster(path) as source:
        index, stats = build_index(source, tiny_model, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert stats.tiles_done_before == 4 and stats.tiles_embedded == 11
    done = [d for d, _ in seen]  # reported as the writer thread commits batches: growing, ending at all 12
    assert done == sorted(set(done)) and done[0] > 4 and seen[-1] == (12, 12) and {t for _, t in seen} == {12}
    with open_raster(path) as source:
        fresh, _ = build_index(source, tiny_model, root=tmp_path / "other-cache")
    np.testing.assert_allclose(index.vectors(list(range(6))), fresh.vectors(list(range(6))), atol=1e-6)


def test_a_failed_write_stops_indexing_and_keeps_the_batches_before_it(tmp_path, cache, tiny_model, monkeypatch):
    import rs_text_search.core.pipeline as pipeline

    path = tiles_raster(tmp_path / "t.tif", 32, SEEDS)
    real_write, writes = pipeline.write_rows, []

    def failing_write(*args):
        writes.append(1)
        if len(writes) == 3:
            raise sqlite3.OperationalError("database or disk is full")
        real_write(*args)

    monkeypatch.setattr(pipeline, "write_rows", failing_write)
    with open_raster(path) as source, pytest.raises(CacheError, match="is full; free some space"):
        build_index(source, tiny_model, batch_size=2, readers=1)
    (folder,) = (cache / "indexes").iterdir()
    with sqlite3.connect(folder / "catalog.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == 4  # the two batches before the failure
    assert not TileIndex.open(folder).complete


def test_a_full_disk_at_finalize_is_one_sentence_and_the_next_run_finishes(tmp_path, cache, tiny_model, monkeypatch):
    import faiss

    path = tiles_raster(tmp_path / "t.tif", 32, SEEDS)
    real_write = faiss.write_index

    def full(index, name):
        raise RuntimeError("Error: 'ret == (n)' failed: write error in index.faiss: 0 != 1 (No space left on device)")

    monkeypatch.setattr(faiss, "write_index", full)
    with open_raster(path) as source, pytest.raises(CacheError, match="is full; free some space and run again"):
        build_index(source, tiny_model)
    monkeypatch.setattr(faiss, "write_index", real_write)
    assert not list(cache.rglob("*.tmp*"))
    with open_raster(path) as source:
        index, stats = build_index(source, tiny_model)
    assert stats.tiles_done_before == 12 and stats.repaired is None and index.problem(deep=True) is None


def test_all_nodata_raster_is_refused_and_leaves_nothing(tmp_path, cache, tiny_model):
    path = write_geotiff(tmp_path / "empty.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    with open_raster(path) as source, pytest.raises(RasterError, match="no tile with image content"):
        build_index(source, tiny_model)
    assert not any((cache / "indexes").iterdir())


def test_index_of_another_model_is_never_mixed(tmp_path, cache, tiny_model, other_model_dir):
    from rs_text_search.core.model import load_model

    other = load_model(other_model_dir, provider="cpu")
    path = tiles_raster(tmp_path / "t.tif", 32, SEEDS)
    with open_raster(path) as source:
        index, _ = build_index(source, tiny_model)
    with pytest.raises(IndexMismatchError, match="re-index"):
        Searcher(other, [index])
    assert list_indexes(cache, model_sha256=other.sha256) == []


def test_a_text_side_refit_keeps_the_indexes_and_a_new_image_side_does_not(tmp_path, cache, tiny_model_dir):
    """The identity an index is keyed on is the image tower's: a model whose text side alone changed
    (training.realign, training.quantize) searches the indexes made before, with its own query embeddings."""
    import json
    import shutil

    from rs_text_search.core.model import file_sha256, load_model, read_manifest
    from training.realign import append_text_map

    refit = shutil.copytree(tiny_model_dir, tmp_path / "refit")
    dim = read_manifest(tiny_model_dir)["embed_dim"]
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(dim, dim)))[0]
    append_text_map(tiny_model_dir / "text.onnx", refit / "text.onnx", rotation, np.zeros(dim))
    manifest = read_manifest(refit, verify_files=False)
    manifest["files"]["text.onnx"] = file_sha256(refit / "text.onnx")
    (refit / "manifest.json").write_text(json.dumps(manifest))
    base, refitted = load_model(tiny_model_dir, provider="cpu"), load_model(refit, provider="cpu")
    assert refitted.sha256 == base.sha256
    assert not np.allclose(refitted.embed_texts(["a lake"]), base.embed_texts(["a lake"]))

    path = tiles_raster(tmp_path / "t.tif", 32, SEEDS)
    with open_raster(path) as source:
        index, _ = build_index(source, base)
    with open_raster(path) as source:
        again, stats = build_index(source, refitted)
    assert again.directory == index.directory and stats.tiles_done_before == stats.tiles_total  # nothing re-embedded
    hits = Searcher(refitted, [index]).search_text("a lake", top_k=3)
    query = refitted.embed_texts(["a lake"])[0]
    expected = [float(index.vectors([index.parse_tile_id(h.tile_id)])[0] @ query) for h in hits]
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-5) and len(hits) == 3

    resized = shutil.copytree(tiny_model_dir, tmp_path / "resized")
    manifest = read_manifest(resized, verify_files=False)
    manifest["image"]["interpolation"] = "bilinear" if manifest["image"]["interpolation"] != "bilinear" else "bicubic"
    (resized / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="re-index"):
        Searcher(load_model(resized, provider="cpu"), [index])


def test_hnsw_agrees_with_exact_search_on_clustered_vectors():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    vectors = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    queries = vectors[:100] + 0.05 * rng.normal(size=(100, 32)).astype(np.float32)
    exact = make_faiss_index(vectors, approximate=False).search(queries, 10)[1]
    approx = make_faiss_index(vectors, approximate=True).search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95
    assert type(make_faiss_index(vectors[:10])).__name__ == "IndexFlatIP"


def test_default_tiles_cover_the_ground_the_model_was_trained_on(tmp_path, cache, tiny_model_dir):
    import json
    import shutil

    from rs_text_search.core.indexing import auto_tile_size
    from rs_text_search.core.model import load_model, model_sha256, read_manifest

    trained_at = tmp_path / "model"
    shutil.copytree(tiny_model_dir, trained_at)
    manifest = read_manifest(trained_at)
    manifest["ground_m_per_px"] = 1.5  # the tiny model's 32 px input covered 48 m in "training"
    (trained_at / "manifest.json").write_text(json.dumps(manifest))
    model = load_model(trained_at, provider="cpu")
    assert model.sha256 == model_sha256(read_manifest(tiny_model_dir)), "not part of the model's identity"

    data = np.random.default_rng(1).integers(0, 256, (3, 96, 144), dtype=np.uint8)
    with open_raster(write_geotiff(tmp_path / "one_metre.tif", data)) as source:
        size, why, far = auto_tile_size(source, model)
        index, stats = build_index(source, model)
    assert size == 48 and "48 px tiles (1 m pixels, 48 m tiles)" in why and not far
    assert index.meta["grid"]["tile_size_px"] == 48 and stats.tiles_total == 2 * 3
    with open_raster(write_geotiff(tmp_path / "coarse.tif", data, pixel_m=300.0)) as source:
        size, why, far = auto_tile_size(source, model)
    assert size == 8 and far and "expect weaker results" in why  # 48 m would be a fraction of a pixel
    with open_raster(write_geotiff(tmp_path / "plain.tif", data, crs=None)) as source:
        assert auto_tile_size(source, model)[0] == 32  # no CRS: one raster pixel per model pixel
    with open_raster(write_geotiff(tmp_path / "again.tif", data)) as source:
        assert auto_tile_size(source, load_model(tiny_model_dir, provider="cpu"))[0] == 32  # nothing recorded
