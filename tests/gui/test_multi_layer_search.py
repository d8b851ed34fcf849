"""Issue 11 in the plugin: a search over several layers runs on one merged vector index (the engine's
``Searcher`` merges whenever it searches more than one index), and finds what the command line finds."""

from __future__ import annotations

import json

import pytest

from rs_text_search.cli import main
from tests.core.conftest import tiles_raster

from .conftest import TEST_TILE_PX

pytestmark = pytest.mark.qgis


def test_several_layers_are_searched_as_one_index_like_the_command_line(plugin, iface, fresh_cache, wait_idle,
                                                                       tmp_path, tiny_model_dir, capsys):
    grids = ([[1, 2], [3, 4]], [[5, 6], [7, 1]], [[8, 9], [10, 11]])
    layers = [iface.add_raster(tiles_raster(tmp_path / f"part{n}.tif", TEST_TILE_PX, grid,
                                            origin=(500000.0 + 1000 * n, 4000000.0)))
              for n, grid in enumerate(grids)]
    iface.mapCanvas().setExtent(layers[0].extent())
    controller = plugin.controller
    controller.index_layers(layers)
    wait_idle(controller)
    assert len(list(fresh_cache.glob("indexes/*/meta.json"))) == 3

    task = controller.search_text("farmland")
    wait_idle(controller)
    assert task.succeeded and len(task.indexes) == 3
    (merged,) = fresh_cache.glob("merged/*/members.json")  # one vector index for the three layers
    assert len(json.loads(merged.read_text())["members"]) == 3
    plugin_results = [(r.tile_id, round(r.score, 5)) for r in controller.results]
    assert len(plugin_results) == 10 and {r.raster_name for r in controller.results} == {"part0", "part1", "part2"}

    capsys.readouterr()
    code = main(["search", "farmland", "--top-k", "10", "--json", "--model", str(tiny_model_dir), "--provider", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [(r["tile_id"], round(r["score"], 5)) for r in json.loads(out)] == plugin_results
    assert len(list(fresh_cache.glob("merged/*/members.json"))) == 1  # the command line reused the same one
