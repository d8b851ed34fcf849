"""The Processing algorithms, run through processing.run like a model or qgis_process would."""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsVectorLayer

from rs_text_search.core.export import FIELDS

pytestmark = pytest.mark.qgis

SCENE = "massachusetts_22978945_15.tif"


class Feedback(QgsProcessingFeedback):
    """Keeps the errors an algorithm reports (processing.run only says that there were some)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803 - QGIS API
        self.errors.append(error)


def run_failing(processing, algorithm: str, parameters: dict) -> str:
    feedback = Feedback()
    with pytest.raises(QgsProcessingException) as raised:
        processing.run(algorithm, parameters, feedback=feedback)
    return " ".join(feedback.errors + [str(raised.value)])


@pytest.fixture
def algorithms(plugin):
    """The plugin's provider is registered; returns ``processing`` itself."""
    import processing

    assert QgsApplication.processingRegistry().providerById("rs_text_search") is not None
    return processing


def test_index_search_and_similar_algorithms(algorithms, iface, scenes, tmp_path):
    processing = algorithms
    layer = iface.add_raster(scenes / SCENE)
    indexed = processing.run("rs_text_search:index_raster_layers", {"LAYERS": [layer], "TILE_SIZE": 64})
    assert indexed["TILES"] == 19 * 15 and len(indexed["INDEXES"].splitlines()) == 1

    out = tmp_path / "text.gpkg"
    found = processing.run("rs_text_search:search_by_text", {"QUERY": "parking lot", "TOP_K": 5, "LAYERS": [layer],
                                                             "OUTPUT": str(out)})
    result = QgsVectorLayer(found["OUTPUT"], "found", "ogr")
    assert result.featureCount() == 5
    assert [f.name() for f in result.fields() if f.name() != "fid"] == [name for name, _ in FIELDS]
    assert result.crs() == layer.crs()
    ranks = [f["rank"] for f in result.getFeatures()]
    assert sorted(ranks) == [1, 2, 3, 4, 5]

    centre = layer.extent().center()
    similar = processing.run("rs_text_search:find_similar_tiles", {
        "POINT": f"{centre.x()},{centre.y()} [{layer.crs().authid()}]", "TOP_K": 3, "OUTPUT": "memory:"})
    memory = similar["OUTPUT"]
    memory = memory if isinstance(memory, QgsVectorLayer) else QgsProject.instance().mapLayer(memory)
    assert memory.featureCount() == 3
    example = next(memory.getFeatures())["query"]
    assert example.startswith("similar to the tile at")

    tile_id = next(result.getFeatures())["tile_id"]
    by_id = processing.run("rs_text_search:find_similar_tiles", {"TILE_IDS": tile_id, "TOP_K": 4,
                                                                  "MIN_SCORE": -1.0, "OUTPUT": "memory:"})
    layer_by_id = by_id["OUTPUT"]
    ids = [f["tile_id"] for f in layer_by_id.getFeatures()]
    assert len(ids) == 4 and tile_id not in ids


def test_search_algorithm_refuses_unindexed_layers(algorithms, iface, scenes, fresh_cache):
    processing = algorithms
    layer = iface.add_raster(scenes / "landsat_RGB.byte.tif")
    errors = run_failing(processing, "rs_text_search:search_by_text", {"QUERY": "river", "LAYERS": [layer],
                                                                       "OUTPUT": "memory:"})
    assert "'landsat_RGB.byte' is not indexed with the model" in errors
    errors = run_failing(processing, "rs_text_search:search_by_text", {"QUERY": "river", "OUTPUT": "memory:"})
    assert "Nothing is indexed with the model" in errors


def test_find_similar_needs_an_example(algorithms, iface, scenes, cache):
    processing = algorithms
    layer = iface.add_raster(scenes / SCENE)
    processing.run("rs_text_search:index_raster_layers", {"LAYERS": [layer], "TILE_SIZE": 64})
    errors = run_failing(processing, "rs_text_search:find_similar_tiles", {"OUTPUT": "memory:"})
    assert "point on an indexed layer or at least one tile id" in errors
