"""A finished index removes the indexes it supersedes, found through the register of each file's indexes."""

from __future__ import annotations

import os
import shutil

from rs_text_search.core.indexing import build_index
from rs_text_search.core.scan import RASTERS_DIR
from rs_text_search.core.sources import open_raster
from rs_text_search.core.tiling import GridSpec
from tests.core.conftest import textured_rgb, write_geotiff


def index_of(path, model):
    with open_raster(path) as source:
        return build_index(source, model, GridSpec(64))[0]


def folders(cache) -> set[str]:
    return {p.name for p in (cache / "indexes").iterdir()}


def test_changed_and_moved_files_replace_their_old_indexes_and_others_stay(tmp_path, cache, tiny_model):
    a = write_geotiff(tmp_path / "a.tif", textured_rgb(100, 130, seed=1))
    b = write_geotiff(tmp_path / "b.tif", textured_rgb(100, 130, seed=2))
    first, other = index_of(a, tiny_model), index_of(b, tiny_model)
    os.utime(a, ns=(0, 10**18))  # changed: a new index of the same path
    changed = index_of(a, tiny_model)
    assert folders(cache) == {changed.key, other.key}
    moved = index_of(a.rename(tmp_path / "a-moved.tif"), tiny_model)  # moved: the same bytes at another path
    assert folders(cache) == {moved.key, other.key}
    assert first.key not in folders(cache)


def test_a_cache_made_before_the_register_and_folders_removed_by_hand(tmp_path, cache, tiny_model):
    a = write_geotiff(tmp_path / "a.tif", textured_rgb(100, 130, seed=1))
    b = write_geotiff(tmp_path / "b.tif", textured_rgb(100, 130, seed=2))
    index_of(a, tiny_model)
    stale_b = index_of(b, tiny_model)
    shutil.rmtree(cache / RASTERS_DIR)  # as an older version left the cache: every meta.json is read once
    os.utime(a, ns=(0, 10**18))
    changed = index_of(a, tiny_model)
    assert folders(cache) == {changed.key, stale_b.key}
    shutil.rmtree(stale_b.directory)  # deleted by hand: its register entry goes when next met
    os.utime(b, ns=(0, 10**18))
    new_b = index_of(b, tiny_model)
    assert folders(cache) == {changed.key, new_b.key}
    by_path = {p.name for p in (cache / RASTERS_DIR).glob("path-*/*")}
    assert by_path == folders(cache), "entries of removed folders go when their path is indexed again"
