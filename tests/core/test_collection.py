"""Collections through the real command line: sources (folder + glob, list, VRT), syncing without re-embedding,
removed and changed rasters, the merged index against the per-index search, bounding boxes, damaged members."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rs_text_search.core.collection import Collection
from rs_text_search.core.errors import QueryError
from rs_text_search.core.index import TileIndex
from rs_text_search.core.indexing import build_index
from rs_text_search.core.search import Searcher
from rs_text_search.core.sources import open_raster
from tests.core.conftest import tiles_raster

GRIDS = [[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]], [[13, 14], [15, 1]]]  # last tile repeats the first


def make_rasters(folder, grids=GRIDS, first=0):
    """Rasters side by side 1 km apart (r<first>.tif, ...), 2 x 2 tiles of 32 px each."""
    folder.mkdir(parents=True, exist_ok=True)
    return [tiles_raster(folder / f"r{first + n}.tif", 32, grid, origin=(500000.0 + 1000 * (first + n), 4000000.0))
            for n, grid in enumerate(grids)]


def search_all(run, *argv, top_k=100):
    code, out, err = run("search", "farmland", "--top-k", str(top_k), "--json", *argv)
    assert code == 0, err
    return json.loads(out), err


def test_sources_folder_with_glob_text_list_and_vrt(run, tmp_path):
    rasters = make_rasters(tmp_path / "tiles")
    (tmp_path / "tiles" / "notes.txt").write_text("not a raster")
    code, out, err = run("index", "--collection", "folder", str(tmp_path / "tiles"), "--glob", "r[012].tif",
                         "--tile-size", "32", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rasters"] == 3 and summary["tiles"] == 12
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two of them\ntiles/{rasters[0].name}\n\n{rasters[3]}\n")
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="128" rasterYSize="64"><VRTRasterBand dataType="Byte" band="1">
        <SimpleSource><SourceFilename relativeToVRT="1">tiles/{rasters[1].name}</SourceFilename></SimpleSource>
        <ComplexSource><SourceFilename relativeToVRT="0">{rasters[2]}</SourceFilename></ComplexSource>
        </VRTRasterBand></VRTDataset>""")
    assert run("index", "--collection", "listed", str(listing), "--tile-size", "32")[0] == 0
    assert run("index", "--collection", "vrt", str(vrt), "--tile-size", "32")[0] == 0
    members = {name: sorted(m["raster"] for m in Collection.load(name).members) for name in ("listed", "vrt")}
    assert members == {"listed": [str(rasters[0]), str(rasters[3])], "vrt": [str(rasters[1]), str(rasters[2])]}
    results, _ = search_all(run, "--collection", "vrt")
    assert {r["raster_name"] for r in results} == {"r1", "r2"} and len(results) == 8
    code, out, _ = run("list", "--collections", "--json")
    assert code == 0
    assert {(c["collection"], c["rasters"], c["tiles"]) for c in json.loads(out)} == {
        ("folder", 3, 12), ("listed", 2, 8), ("vrt", 2, 8)}


def test_adding_removing_and_changing_rasters(run, tmp_path, cache):
    folder = tmp_path / "tiles"
    make_rasters(folder, GRIDS[:2])
    assert run("index", "--collection", "c", str(folder), "--tile-size", "32")[0] == 0
    catalogs = {p: p.stat().st_mtime_ns for p in cache.glob("indexes/*/catalog.sqlite")}
    assert len(catalogs) == 2

    make_rasters(folder, GRIDS[2:3], first=2)  # a new file in the folder joins on a re-sync
    code, out, err = run("index", "--collection", "c", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [(r["raster"], r["embedded"], r["resumed_from"]) for r in summary["indexed"]] == [(str(folder / "r2.tif"),
                                                                                              4, 0)]
    assert summary["unchanged"] == 2 and summary["rasters"] == 3
    assert {p: p.stat().st_mtime_ns for p in catalogs} == catalogs  # the others were not touched

    code, out, err = run("index", "--collection", "c", "--remove", str(folder / "r0.tif"), "--json")
    assert code == 0 and json.loads(out)["removed"] == [str(folder / "r0.tif")] and json.loads(out)["indexed"] == []
    results, _ = search_all(run, "--collection", "c")
    assert {r["raster_name"] for r in results} == {"r1", "r2"} and len(results) == 8
    assert json.loads(run("index", "--collection", "c", "--json")[1])["rasters"] == 2  # a re-sync keeps it out

    old_key = next(m["key"] for m in Collection.load("c").members if m["raster"].endswith("r1.tif"))
    make_rasters(folder, [[[21, 22], [23, 24]]], first=1)  # r1.tif rewritten with other pixels
    (folder / "r2.tif").unlink()  # and r2.tif deleted
    code, out, err = run("index", "--collection", "c", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [r["raster"] for r in summary["indexed"]] == [str(folder / "r1.tif")]
    assert summary["left"] == [str(folder / "r2.tif")] and summary["rasters"] == 1
    assert not (cache / "indexes" / old_key).exists()  # the superseded index is gone
    results, err = search_all(run, "--collection", "c")
    assert len(results) == 4 and len({r["tile_id"] for r in results}) == 4 and "warning" not in err
    assert not any(r["tile_id"].startswith(old_key[:8]) for r in results)


def per_index_hits(indexes, query, k, bbox=None):
    """The search before merged indexes: each index on its own, hits merged by score."""
    hits = []
    for index in indexes:
        allowed = None if bbox is None else index.tiles_in_bounds(bbox)
        if allowed is not None and len(allowed) == 0:
            continue
        scores, tiles = index.search(query[None, :], k, allowed)
        hits += [(round(float(s), 5), index.tile_id(int(t))) for s, t in zip(scores[0], tiles[0]) if t >= 0]
    return sorted(hits, key=lambda hit: (-hit[0], hit[1]))[:k]


@pytest.mark.parametrize("bbox", [None, (500010.0, 3999950.0, 502040.0, 3999999.0)])
def test_the_merged_index_finds_what_each_index_finds(tmp_path, cache, tiny_model, bbox):
    indexes = []
    for path in make_rasters(tmp_path / "tiles"):
        with open_raster(path) as source:
            indexes.append(build_index(source, tiny_model)[0])
    searcher = Searcher(tiny_model, indexes)
    for text, k in (("farmland", 5), ("a harbour with boats", 16), ("roofs", 40)):
        query = tiny_model.embed_texts([text])[0]
        expected = per_index_hits(indexes, query, k, bbox)
        results = searcher.search_text(text, top_k=k, bbox=bbox)
        got = sorted(((round(r.score, 5), r.tile_id) for r in results), key=lambda hit: (-hit[0], hit[1]))
        assert got == expected  # tile for tile (ties ordered by id on both sides)
    assert (cache / "merged").is_dir() and searcher.merged.merged.faiss.ntotal == 16
    if bbox:
        assert {r.raster_name for r in searcher.search_text("roofs", top_k=40, bbox=bbox)} == {"r0", "r1", "r2"}
    assert searcher.tile_at(502040.0, 3999950.0, "EPSG:32633") == indexes[2].tile_id(3)  # row 1, column 1
    assert searcher.tile_at(502040.0, 3999950.0) == indexes[2].tile_id(3)
    with pytest.raises(QueryError, match="No indexed tile"):
        searcher.tile_at(501500.0, 3999950.0, "EPSG:32633")  # between two rasters
    similar = searcher.similar([indexes[0].tile_id(0)], top_k=1)  # the pixel-identical tile of another raster
    assert similar[0].tile_id == indexes[3].tile_id(3) and similar[0].score == pytest.approx(1.0, abs=1e-4)


def test_a_bbox_on_a_collection_in_another_crs(run, tmp_path):
    make_rasters(tmp_path / "tiles")
    assert run("index", "--collection", "c", str(tmp_path / "tiles"), "--tile-size", "32")[0] == 0
    results, _ = search_all(run, "--collection", "c", "--bbox", "502000", "3999968", "502031", "3999999", "--crs",
                            "EPSG:32633")
    assert [(r["raster_name"], r["tile_id"].split(":", 1)[1]) for r in results] == [("r2", "0:0")]
    lon, lat = 15.0 + 2.0125 / 90, 36.13  # roughly over r2, in degrees: transformed once per CRS
    results, _ = search_all(run, "--collection", "c", "--bbox", str(lon - 0.02), str(lat - 0.2), str(lon + 0.02),
                            str(lat + 0.2), "--crs", "EPSG:4326")
    assert results and {r["raster_name"] for r in results} <= {"r1", "r2", "r3"}


def test_a_damaged_or_stale_member_is_skipped_with_one_warning(run, tmp_path, cache):
    rasters = make_rasters(tmp_path / "tiles")
    assert run("index", "--collection", "c", str(tmp_path / "tiles"), "--tile-size", "32")[0] == 0
    merged = cache / "collections" / "c" / "merged" / "index.faiss"
    built = merged.stat().st_mtime_ns
    key = next(m["key"] for m in Collection.load("c").members if m["raster"] == str(rasters[1]))
    damaged = TileIndex.open(cache / "indexes" / key)
    (damaged.directory / "ids.npy").write_bytes(b"\x00" * (damaged.directory / "ids.npy").stat().st_size)
    results, err = search_all(run, "--collection", "c")
    assert err.count("warning: ") == 1 and "Skipping the index of 'r1'" in err and "ids.npy" in err
    assert {r["raster_name"] for r in results} == {"r0", "r2", "r3"} and len(results) == 12
    assert merged.stat().st_mtime_ns == built  # the members left are masked, not merged again

    os.utime(rasters[2], ns=(rasters[2].stat().st_atime_ns, rasters[2].stat().st_mtime_ns + 10**9))
    results, err = search_all(run, "--collection", "c")
    assert err.count("warning: ") == 2 and "Skipping the index of 'r2': its raster file changed" in err
    assert {r["raster_name"] for r in results} == {"r0", "r3"}


def count_checks(monkeypatch):
    """Files hashed and catalogs checked from now on (the deep checks' work), as lists to look into."""
    from rs_text_search.core import integrity

    hashed, catalogs = [], []
    real_sha256, real_catalog = integrity.file_sha256, integrity.catalog_problem
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(Path(path)) or real_sha256(path))
    monkeypatch.setattr(integrity, "catalog_problem", lambda *a, **k: catalogs.append(a[1]) or real_catalog(*a, **k))
    return hashed, catalogs


def test_an_unchanged_member_is_not_checked_again_and_a_changed_one_is(run, tmp_path, cache, monkeypatch):
    """Opening a collection stats each member's files; only a member whose files changed since the merged index
    recorded them verified is hashed and checked again (core.integrity: trusted again). A change of bytes that
    keeps size, mtime, ctime and inode (below the file system: a failing disk) is what this leaves to the next
    check that sees a stamp change, or to the next ``index`` of the raster; one that sets mtime back is still
    seen (ctime)."""
    rasters = make_rasters(tmp_path / "tiles")
    assert run("index", "--collection", "c", str(tmp_path / "tiles"), "--tile-size", "32")[0] == 0
    hashed, catalogs = count_checks(monkeypatch)
    results, err = search_all(run, "--collection", "c")
    assert len(results) == 16 and "warning" not in err
    assert catalogs == [] and all(path.parent.name == "merged" for path in hashed)  # only the merged index's files

    members = {Path(m["raster"]).stem: cache / "indexes" / m["key"] for m in Collection.load("c").members}
    faiss_file = members["r1"] / "index.faiss"
    data = bytearray(faiss_file.read_bytes())
    data[-8:] = bytes(8)  # the same size, other bytes, a later mtime
    faiss_file.write_bytes(bytes(data))
    ids_file = members["r3"] / "ids.npy"
    before = ids_file.stat()
    ids_file.write_bytes(b"\x00" * before.st_size)
    os.utime(ids_file, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back: ctime still tells
    hashed.clear()
    results, err = search_all(run, "--collection", "c")
    assert err.count("warning: ") == 2 and "'r1'" in err and "index.faiss" in err and "'r3'" in err
    assert {r["raster_name"] for r in results} == {"r0", "r2"}
    assert {path.parent for path in hashed if path.parent.name != "merged"} == {members["r1"], members["r3"]}

    os.utime(rasters[2], ns=(rasters[2].stat().st_atime_ns, rasters[2].stat().st_mtime_ns + 10**9))
    results, err = search_all(run, "--collection", "c")  # a stale raster is stat'ed, whatever the stamps
    assert err.count("warning: ") == 3 and "Skipping the index of 'r2': its raster file changed" in err
    assert {r["raster_name"] for r in results} == {"r0"}


def test_a_checked_again_member_is_recorded_and_the_plugin_path_trusts_it(tmp_path, cache, tiny_model, monkeypatch):
    """Searcher over indexes opened anew (the plugin's list of layers): members unchanged since the merged index
    recorded them are not checked again; one whose files were replaced (same bytes, a new inode) is checked in
    full once, then recorded, so the next search trusts it again."""
    from rs_text_search.core.index import list_indexes

    for path in make_rasters(tmp_path / "tiles"):
        with open_raster(path) as source:
            build_index(source, tiny_model)
    Searcher(tiny_model, list_indexes()).search_text("roofs")  # builds the ad-hoc merged index
    hashed, catalogs = count_checks(monkeypatch)
    searcher = Searcher(tiny_model, list_indexes())
    assert len(searcher.search_text("roofs", top_k=16)) == 16
    assert catalogs == [] and not [p for p in hashed if p.parent.name != "merged" and p.parent.parent.name != "merged"]
    copied = list_indexes()[0].directory / "ids.npy"
    copied.write_bytes(copied.read_bytes())  # same bytes written again: another mtime and ctime
    Searcher(tiny_model, list_indexes()).search_text("roofs")
    assert [p.parent for p in catalogs] == [copied.parent]
    catalogs.clear()
    Searcher(tiny_model, list_indexes()).search_text("roofs")
    assert catalogs == []


@pytest.mark.parametrize(("argv", "phrase"), [
    (["index", "--collection", "../up", "{tmp}"], "is not a collection name"),
    (["index", "--collection", "", "{tmp}"], "is not a collection name"),
    (["index", "--collection", "nope"], "There is no collection 'nope'"),
    (["search", "farmland", "--collection", "nope"], "There is no collection 'nope'"),
    (["similar", "--tile", "deadbeef:0:0", "--collection", "a b"], "is not a collection name"),
    (["index", "--collection", "c", "{tmp}/missing"], "does not exist"),
    (["index", "--collection", "c", "{tmp}/tiles/r0.tif", "--glob", "*.tif"], "none of the sources given is a folder"),
    (["index", "--collection", "c", "--remove", "{tmp}/tiles/r9.tif"], "is not a raster of the collection 'c'"),
    (["index", "--collection", "c", "--tile-size", "64"], "is indexed with --tile-size 32, not 64"),
    (["index", "--glob", "*.tif", "{tmp}/tiles"], "works with --collection NAME only"),
])
def test_bad_collection_input_is_one_sentence_and_exit_2(run, tmp_path, argv, phrase):
    make_rasters(tmp_path / "tiles", GRIDS[:1])
    assert run("index", "--collection", "c", str(tmp_path / "tiles"), "--tile-size", "32")[0] == 0
    code, out, err = run(*[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and out == ""
    (sentence,) = err.splitlines()
    assert sentence.startswith("error: ") and phrase in sentence


def test_merged_folders_of_ad_hoc_sets_are_pruned(tmp_path, cache, tiny_model):
    indexes = []
    for path in make_rasters(tmp_path / "tiles"):
        with open_raster(path) as source:
            indexes.append(build_index(source, tiny_model)[0])
    for n in range(6):  # six different pairs of rasters
        pair = [indexes[n % 4], indexes[(n + 1 + n // 4) % 4]]
        Searcher(tiny_model, pair).search_text("roofs", top_k=2)
    assert len(list((cache / "merged").iterdir())) == 4
    np.testing.assert_array_equal(np.sort(Searcher(tiny_model, indexes).merged.merged.tiles[:4]), [0, 1, 2, 3])
    twice = Searcher(tiny_model, [*indexes, indexes[0]]).search_text("roofs", top_k=20)  # one raster, two layers
    assert len({r.tile_id for r in twice}) == len(twice) == 16
