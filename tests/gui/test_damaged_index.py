"""Issue 12 in the plugin: a damaged index is one sentence in the message bar; the healthy rasters are still
searched, and indexing the layer again rebuilds it."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from rs_text_search.core.index import TileIndex

pytestmark = pytest.mark.qgis

SCENES = ("massachusetts_22978945_15.tif", "landsat_RGB.byte.tif")


def test_a_damaged_index_is_a_sentence_in_the_message_bar(plugin, iface, scenes, fresh_cache, wait_idle):
    controller = plugin.controller
    layers = [iface.add_raster(scenes / name) for name in SCENES]
    iface.mapCanvas().setExtent(layers[0].extent())
    controller.index_layers(layers)
    wait_idle(controller)
    (folder,) = [m.parent for m in fresh_cache.glob("indexes/*/meta.json")
                 if json.loads(m.read_text())["raster"]["name"].startswith("massachusetts")]
    with closing(sqlite3.connect(folder / "catalog.sqlite")) as db, db:
        db.execute("DELETE FROM tiles WHERE id = 0")
    controller.engine.drop_index(folder)  # as in a new session: not verified yet

    controller.search_text("trees")
    wait_idle(controller)
    texts = [item.text() for item in iface.messageBar().items()]
    assert any("The index of 'massachusetts_22978945_15' cannot be used (its catalog holds" in t for t in texts), texts
    assert controller.results and {r.raster_name for r in controller.results} == {"landsat_RGB.byte"}

    controller.index_layers(layers[:1])  # rebuilt: the tile is embedded again
    wait_idle(controller)
    assert TileIndex.open(folder).problem(deep=True) is None
    controller.engine.drop_index(folder)
    task = controller.search_text("trees")
    wait_idle(controller)
    assert task.succeeded and task.skipped == [] and len(task.indexes) == 2
