"""Search and GeoPackage export over real indexes: ranking, examples, filters, several CRSs."""

import numpy as np
import pytest

from rs_text_search.core.errors import ExportError, QueryError
from rs_text_search.core.export import FIELDS, export_geopackage
from rs_text_search.core.indexing import build_index
from rs_text_search.core.search import Searcher
from rs_text_search.core.sources import open_raster
from tests.core.conftest import tiles_raster

SEEDS = [[1, 2, 3, 4], [5, 6, -1, 7], [8, 1, 9, 10]]  # tile (2,1) repeats tile (0,0); (1,2) is constant


@pytest.fixture
def searcher(tmp_path, cache, tiny_model):
    utm = tiles_raster(tmp_path / "utm.tif", 32, SEEDS)
    geo = tiles_raster(tmp_path / "geo.tif", 32, [[11, 12], [13, 1]], crs="EPSG:4326",
                       origin=(15.0, 36.2), pixel_m=0.0001)
    indexes = []
    for path in (utm, geo):
        with open_raster(path) as source:
            indexes.append(build_index(source, tiny_model)[0])
    return Searcher(tiny_model, indexes)


def test_text_search_ranks_like_brute_force(searcher, tiny_model):
    results = searcher.search_text("a parking lot next to a road", top_k=25)
    assert len(results) == 15  # 11 + 4 embedded tiles, both rasters
    query = tiny_model.embed_texts(["a parking lot next to a road"])[0]
    expected = sorted(((float(idx.vectors([i])[0] @ query), idx.tile_id(i)) for idx in searcher.indexes
                       for i in idx._load()[1]), reverse=True)
    by_tile = {t: s for s, t in expected}
    assert {r.tile_id for r in results} == set(by_tile)
    np.testing.assert_allclose([r.score for r in results], [s for s, _ in expected], atol=1e-5)  # same order
    np.testing.assert_allclose([r.score for r in results], [by_tile[r.tile_id] for r in results], atol=1e-5)
    assert [r.rank for r in results] == list(range(1, 16))
    assert {r.raster_name for r in results} == {"utm", "geo"}


def test_similar_finds_the_pixel_identical_tiles_first(searcher):
    utm = searcher.indexes[0]
    example = utm.tile_id(0)  # seed 1, repeated at (2, 1) and in the geographic raster at (1, 1)
    results = searcher.similar([example], top_k=3)
    assert example not in [r.tile_id for r in results]
    assert {r.tile_id for r in results[:2]} == {utm.tile_id(9), searcher.indexes[1].tile_id(3)}
    assert results[0].score == pytest.approx(1.0, abs=1e-4)


def test_negative_examples_push_results_away(searcher):
    utm = searcher.indexes[0]
    plain = searcher.search(texts=["fields"], top_k=15)
    steered = searcher.search(texts=["fields"], negative_tiles=[plain[0].tile_id], top_k=15)
    assert plain[0].tile_id not in [r.tile_id for r in steered]
    assert [r.tile_id for r in plain] != [r.tile_id for r in steered]
    with pytest.raises(QueryError, match="cancels out"):
        searcher.query_vector(tiles=[utm.tile_id(0)], negative_tiles=[utm.tile_id(0)], negative_weight=1.0)
    assert searcher.search(texts=["fields"], rerank=True, top_k=5)


def test_bbox_in_another_crs_and_point_lookup(searcher):
    utm = searcher.indexes[0]
    inside = searcher.search_text("roofs", top_k=50, bbox=(500000.0, 3999936.0, 500031.0, 3999999.0),
                                  bbox_crs="EPSG:32633")
    assert {r.tile_id for r in inside} == {utm.tile_id(0), utm.tile_id(4)}
    lonlat = searcher.search_text("roofs", top_k=50, bbox=(15.00005, 36.19995, 15.00006, 36.19996),
                                  bbox_crs="EPSG:4326")
    assert [r.raster_name for r in lonlat] == ["geo"]
    assert searcher.tile_at(500040.0, 3999990.0, "EPSG:32633") == utm.tile_id(1)
    assert searcher.tile_at(500040.0, 3999990.0) == utm.tile_id(1)
    with pytest.raises(QueryError, match="No indexed tile"):
        searcher.tile_at(0.0, 0.0, "EPSG:32633")


@pytest.mark.parametrize(
    "bad", [dict(texts=["  "]), dict(texts=[]), dict(tiles=["nope:1:1"]), dict(texts=["x"], top_k=0)]
)
def test_bad_queries_are_one_sentence(searcher, bad):
    with pytest.raises(QueryError):
        searcher.search(**bad)


def test_export_reads_back_with_ogr_in_wgs84_for_mixed_crs(searcher, tmp_path, tiny_model):
    from osgeo import ogr

    results = searcher.search_text("houses", top_k=6)
    out = export_geopackage(results, tmp_path / "out.gpkg", "houses", tiny_model.name, tiny_model.sha256)
    dataset = ogr.Open(str(out))
    layer = dataset.GetLayer(0)
    assert layer.GetFeatureCount() == 6
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "4326"
    definition = layer.GetLayerDefn()
    assert [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())] == [n for n, _ in FIELDS]
    first = layer.GetNextFeature()
    assert first.GetField("rank") == 1 and first.GetField("query") == "houses"
    assert first.GetField("model_sha256") == tiny_model.sha256 and first.GetField("tile_id") == results[0].tile_id
    assert first.GetGeometryRef().GetGeometryName() == "POLYGON"
    assert list(tmp_path.glob(".out.gpkg*")) == []


def test_export_in_the_raster_crs_and_bad_paths(searcher, tmp_path, tiny_model):
    import pyogrio

    results = searcher.search_text("houses", top_k=3, bbox=(499000.0, 3990000.0, 501000.0, 4001000.0),
                                   bbox_crs="EPSG:32633")
    out = export_geopackage(results, tmp_path / "utm.gpkg", "houses", tiny_model.name, tiny_model.sha256)
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:32633" and info["features"] == 3
    for bad, message in [(tmp_path / "missing" / "x.gpkg", "does not exist"), (tmp_path / "x.shp", "must end in"),
                         (tmp_path / "x.gpkg", "no results")]:
        with pytest.raises(ExportError, match=message):
            export_geopackage([] if "no results" in message else results, bad, "q", "m", "s")
    assert not (tmp_path / "x.gpkg").exists()


def test_rotated_raster_footprints_bbox_filter_and_utc_time(tmp_path, cache, tiny_model):
    """Issue 12, item 9: a rotated raster's tiles are exported and filtered by their real corners (their
    envelope covers 1.87x the area at 30 degrees), and the time field is UTC with its Z."""
    import sqlite3
    from contextlib import closing

    import pyogrio
    import shapely
    from rasterio.transform import Affine

    from rs_text_search.core.tiling import GridSpec

    transform = Affine.translation(500000.0, 4000000.0) * Affine.rotation(30) * Affine.scale(1.0, -1.0)
    path = tiles_raster(tmp_path / "rotated.tif", 32, [[1, 2, 3], [4, 5, 6]], transform=transform)
    with open_raster(path) as source:
        index = build_index(source, tiny_model, GridSpec(32))[0]
    results = Searcher(tiny_model, [index]).search_text("houses", top_k=6)
    out = export_geopackage(results, tmp_path / "rotated.gpkg", "houses", tiny_model.name, tiny_model.sha256)
    geometry = shapely.from_wkb(pyogrio.raw.read(out)[2])
    np.testing.assert_allclose(shapely.area(geometry), 32 * 32, rtol=1e-9)  # not 1,911 m2 envelopes
    footprints = {r.tile_id: shapely.Polygon(r.corners) for r in results}
    # A box in a corner of tile 0's envelope that no tile covers, one inside a tile, one across several.
    corner = shapely.box(*footprints[index.tile_id(0)].bounds).difference(shapely.union_all(list(footprints.values())))
    x, y = corner.representative_point().coords[0]
    envelope_only = 0
    for box in [(x - 0.5, y - 0.5, x + 0.5, y + 0.5), (500040.0, 3999950.0, 500045.0, 3999955.0),
                (500020.0, 3999930.0, 500030.0, 3999940.0)]:
        expected = {t for t, p in footprints.items() if p.intersects(shapely.box(*box)) and not p.touches(
            shapely.box(*box))}
        assert {index.tile_id(int(i)) for i in index.tiles_in_bounds(box)} == expected
        envelopes = {t for t, p in footprints.items() if shapely.box(*p.bounds).intersects(shapely.box(*box))}
        assert expected <= envelopes
        envelope_only += len(envelopes - expected)
    assert envelope_only  # the boxes catch envelopes the tiles do not fill
    with closing(sqlite3.connect(out)) as db:
        (time,) = db.execute("SELECT time FROM rs_text_search_results LIMIT 1").fetchone()
    assert time.endswith("Z")
