"""The engine's faiss index kinds (core.vectors): the pick by size, the compressed kind's round trip
through a file, restricted search, its recall against exact search, and exact stored vectors."""

from __future__ import annotations

import numpy as np
import pytest

from rs_text_search.core import vectors
from rs_text_search.core.indexing import build_index
from rs_text_search.core.sources import open_raster
from tests.core.conftest import tiles_raster


def clustered(count: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres, spread mostly along 8 directions, as model embeddings are (their
    effective dimension is about 20 of 384; uniform random vectors have no neighbours worth finding)."""
    rng = np.random.default_rng(seed)
    centres, spread = rng.normal(size=(50, dim)), rng.normal(size=(8, dim))
    points = centres[rng.integers(0, 50, count)] + 0.3 * rng.normal(size=(count, 8)) @ spread
    points += 0.05 * rng.normal(size=(count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def chunked(data: np.ndarray, rows: int, reads: list | None = None):
    """A chunk source over ``data`` (``reads`` counts how often it is read)."""
    def chunks():
        if reads is not None:
            reads.append(1)
        return (data[start : start + rows] for start in range(0, len(data), rows))
    return chunks


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


def test_the_kind_follows_the_number_of_vectors(monkeypatch):
    monkeypatch.setattr(vectors, "APPROXIMATE_MIN_TILES", 100)
    monkeypatch.setattr(vectors, "COMPRESSED_MIN_TILES", 2_000)
    data = clustered(3_000)
    assert [vectors.index_kind(n) for n in (99, 100, 1_999, 2_000)] == ["exact", "hnsw", "hnsw", "compressed"]
    names = [type(vectors.build_faiss_index(128, n, chunked(data[:n], 700))).__name__ for n in (50, 500, 3_000)]
    assert names == ["IndexFlatIP", "IndexHNSWFlat", "IndexIVFScalarQuantizer"]
    assert type(vectors.make_faiss_index(data)).__name__ == "IndexIVFScalarQuantizer"
    assert vectors.compressed_factory(384, 10_000_000) == "IVF4096,SQfp16"


def test_compressed_index_round_trip_and_restricted_search(tmp_path):
    import faiss

    data = clustered(10_000)
    queries = data[:100] + 0.02 * np.random.default_rng(1).normal(size=(100, 128)).astype(np.float32)
    reads, timings = [], {}
    built = vectors.build_faiss_index(128, len(data), chunked(data, 3_000, reads), kind="compressed", timings=timings)
    assert len(reads) == 2 and built.ntotal == len(data) and set(timings) == {"train_s", "add_s"}
    faiss.write_index(built, str(tmp_path / "index.faiss"))
    index = vectors.load_faiss_index(tmp_path / "index.faiss")
    assert index.nprobe == vectors.IVF_NPROBE and index.nlist == 128  # 2 ** ceil(log2(sqrt(10,000)))
    assert not vectors.reconstructs_exactly(index)

    truth = vectors.make_faiss_index(data, approximate=False).search(queries, 10)[1]
    assert recall(index.search(queries, 10)[1], truth) >= 0.95
    np.testing.assert_array_equal(index.search(queries, 10)[1], built.search(queries, 10)[1])

    even = np.arange(0, len(data), 2, dtype=np.int64)
    params = vectors.search_parameters(index, faiss.IDSelectorBatch(even), selected=len(even))
    found = index.search(queries, 10, params=params)[1]
    assert (found % 2 == 0).all()
    # A small selection (a bounding box): more lists are scanned, so its best tiles are still found.
    few = np.arange(0, len(data), 200, dtype=np.int64)
    params = vectors.search_parameters(index, faiss.IDSelectorBatch(few), selected=len(few))
    found = index.search(queries, 10, params=params)[1]
    assert np.isin(found, few).all()
    truth_few = few[np.argsort(-(queries @ data[few].T), axis=1)[:, :10]]
    assert recall(found, truth_few) >= 0.95


def test_compressed_index_keeps_exact_vectors_in_the_catalog(tmp_path, cache, tiny_model, monkeypatch):
    monkeypatch.setattr(vectors, "COMPRESSED_MIN_TILES", 1)
    seeds = [[r * 6 + c for c in range(6)] for r in range(6)]  # 36 tiles, 8 lists
    path = tiles_raster(tmp_path / "t.tif", 32, seeds)
    with open_raster(path) as source:
        index, _ = build_index(source, tiny_model)
        direct = tiny_model.embed_images([source.read(window, 32) for window in windows(index, [0, 7, 35])])
    assert index.meta["index_type"] == "IndexIVFScalarQuantizer"
    from rs_text_search.core.index import TileIndex

    reopened = TileIndex.open(index.directory)
    np.testing.assert_allclose(reopened.vectors([0, 7, 35]), direct, atol=1e-5)
    assert reopened.vectors([]).shape == (0, direct.shape[1])
    assert reopened.search(direct[1:2], 1)[1][0][0] == 7
    assert reopened.search(direct[1:2], 3, allowed=np.array([3, 7, 9]))[1][0].tolist().count(7) == 1


def windows(index, tile_indexes: list[int]):
    from rs_text_search.core.tiling import Window

    records = index.records(tile_indexes)
    return [Window(*records[t].window) for t in tile_indexes]


@pytest.mark.parametrize("count", [0, 5])
def test_build_refuses_a_source_with_the_wrong_number_of_rows(count):
    with pytest.raises(ValueError, match="expected"):
        vectors.build_faiss_index(128, count + 3, chunked(clustered(max(count, 1))[:count], 2))
