"""Issue 12: every bad input the command line can meet ends in one sentence (exit 2), one warning line and a
correct result, or a rebuilt index; never a traceback or a silently wrong answer.

Two small rasters are indexed once per module (``pristine``); each case works on a copy of that cache.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from rs_text_search.cli import main
from rs_text_search.core.cache import index_key
from rs_text_search.core.scan import RASTERS_DIR
from tests.core.conftest import textured_rgb, tiles_raster, write_geotiff

REPO = Path(__file__).resolve().parents[2]
A_SEEDS = [[1, 2, 3], [4, 5, 6]]  # 2 x 3 tiles of 32 px
B_SEEDS = [[7, 8], [9, 1]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_model_dir):
    """Rasters a and b and a cache holding their finished indexes."""
    root = tmp_path_factory.mktemp("pristine")
    tiles_raster(root / "a.tif", 32, A_SEEDS)
    tiles_raster(root / "b.tif", 32, B_SEEDS, origin=(600000.0, 4000000.0))
    old = os.environ.get("RS_TEXT_SEARCH_CACHE")
    os.environ["RS_TEXT_SEARCH_CACHE"] = str(root / "cache")
    try:
        assert main(["index", str(root / "a.tif"), str(root / "b.tif"), "--json", "--model", str(tiny_model_dir),
                     "--provider", "cpu"]) == 0
    finally:
        os.environ.pop("RS_TEXT_SEARCH_CACHE") if old is None else os.environ.update(RS_TEXT_SEARCH_CACHE=old)
    return root


class World:
    """A copy of the pristine rasters and cache, and the command line over them."""

    def __init__(self, root: Path, model_dir: Path, capsys) -> None:
        self.root, self.model_dir, self.capsys = root, model_dir, capsys
        self.cache = root / "cache"

    def run(self, *argv: str) -> tuple[int, str, list[str]]:
        """(exit code, stdout, stderr lines) of the command line."""
        code = main([*argv, "--model", str(self.model_dir), "--provider", "cpu"])
        out, err = self.capsys.readouterr()
        return code, out, err.splitlines()

    def folder(self, name: str) -> Path:
        """The index folder of raster ``name`` ('a' or 'b')."""
        for meta in self.cache.glob("indexes/*/meta.json"):
            if json.loads(meta.read_text())["raster"]["name"] == name:
                return meta.parent
        raise AssertionError(f"no index of {name}")

    def key(self, name: str) -> str:
        return self.folder(name).name[:8]

    def search(self, *extra: str) -> list[dict]:
        code, out, err = self.run("search", "fields", "--top-k", "20", "--json", *extra)
        assert code == 0 and not err, err
        return json.loads(out)


@pytest.fixture
def world(pristine, tmp_path, tiny_model_dir, capsys, monkeypatch) -> World:
    for item in pristine.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp_path / item.name)
    monkeypatch.setenv("RS_TEXT_SEARCH_CACHE", str(tmp_path / "cache"))
    # The copy keeps each raster's size and mtime, but not its path: move the indexes to the copies' keys.
    for meta_path in list((tmp_path / "cache").glob("indexes/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        moved = str(tmp_path / Path(meta["raster"]["uri"]).name)
        meta["raster"]["uri"] = meta["raster"]["identity"]["path"] = moved
        meta["key"] = index_key(meta["raster"]["identity"], meta["model"]["sha256"], meta["grid"])
        meta_path.write_text(json.dumps(meta))
        meta_path.parent.rename(meta_path.parent.with_name(meta["key"]))
    shutil.rmtree(tmp_path / "cache" / RASTERS_DIR, ignore_errors=True)  # lists the old paths: filled again
    return World(tmp_path, tiny_model_dir, capsys)


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset if offset >= 0 else path.stat().st_size + offset)
        handle.write(data)


def _sql(path: Path, statement: str) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(statement)


def _set_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


# (id, damage to a's index folder, phrase of the warning a search gives, phrase of the note `index` gives)
DAMAGE = [
    ("faiss-empty", lambda k: os.truncate(k / "index.faiss", 0), "index.faiss has the wrong size", "wrong size"),
    ("faiss-half", lambda k: os.truncate(k / "index.faiss", (k / "index.faiss").stat().st_size // 2),
     "index.faiss has the wrong size", "wrong size"),
    ("faiss-bytes", lambda k: _overwrite(k / "index.faiss", -16, b"\x7f" * 8), "index.faiss does not match",
     "does not match"),
    ("faiss-missing", lambda k: (k / "index.faiss").unlink(), "index.faiss is missing", "missing"),
    ("ids-missing", lambda k: (k / "ids.npy").unlink(), "ids.npy is missing", "missing"),
    ("ids-truncated", lambda k: os.truncate(k / "ids.npy", 140), "ids.npy has the wrong size", "wrong size"),
    ("ids-reordered", lambda k: np.save(k / "ids.npy", np.load(k / "ids.npy")[::-1]), "ids.npy does not match",
     "does not match"),
    ("catalog-header", lambda k: _overwrite(k / "catalog.sqlite", 0, b"garbage" * 4), "catalog is damaged",
     "every tile is embedded again"),
    ("catalog-truncated", lambda k: os.truncate(k / "catalog.sqlite", (k / "catalog.sqlite").stat().st_size // 2),
     "catalog", "catalog"),
    ("catalog-empty", lambda k: os.truncate(k / "catalog.sqlite", 0), "catalog is damaged",
     "every tile is embedded again"),
    ("catalog-row-deleted", lambda k: _sql(k / "catalog.sqlite", "DELETE FROM tiles WHERE id = 4"),
     "catalog holds 5 of the 6 tiles", "5 of the 6"),
    ("catalog-bad-embedding", lambda k: _sql(k / "catalog.sqlite", "UPDATE tiles SET embedding = x'00' WHERE id = 2"),
     None, None),  # structure and counts hold: searching is unaffected, and nothing needs rebuilding
    ("catalog-missing", lambda k: (k / "catalog.sqlite").unlink(), "catalog is missing", "catalog is missing"),
    ("meta-missing", lambda k: (k / "meta.json").unlink(), "meta.json is missing", "meta.json is missing"),
    ("meta-broken", lambda k: (k / "meta.json").write_text('{"version": 1, "key": '), "meta.json cannot be read",
     "cannot be read"),
    ("meta-keys-missing", lambda k: (k / "meta.json").write_text('{"version": 1}'), "meta.json cannot be read",
     "cannot be read"),
    ("meta-other-version", lambda k: _set_meta(k, version=0), "made by another version", "another version"),
    ("meta-incomplete", lambda k: _set_meta(k, complete=False), "not finished", None),
]


@pytest.mark.parametrize(("damage", "warning", "note"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_index_is_skipped_with_one_line_then_rebuilt(world, damage, warning, note):
    folder, pristine_ids = world.folder("a"), np.load(world.folder("a") / "ids.npy")
    damage(folder)
    code, out, err = world.run("search", "fields", "--top-k", "20", "--json")
    assert code == 0
    if warning is None:
        assert not err and {r["raster_name"] for r in json.loads(out)} == {"a", "b"}
        return
    (line,) = err
    assert line.startswith("warning: Skipping the index ") and warning in line, line
    assert {r["raster_name"] for r in json.loads(out)} == {"b"}  # the healthy raster is still searched
    code, out, err = world.run("list")  # cheap checks only: files there with their sizes, not their contents
    cheap = any(phrase in warning for phrase in ("wrong size", "missing", "cannot be read", "not finished",
                                                 "another version"))
    assert code == 0 and "b.tif" in out
    assert ("a.tif" not in out and warning in err[0]) if cheap else ("a.tif" in out and not err)

    code, out, err = world.run("index", str(world.root / "a.tif"), "--json")
    assert code == 0, err
    (summary,) = json.loads(out)
    assert summary["embedded"] == 6
    if note:
        assert err == [f"note: the index of 'a' was rebuilt ({summary['repaired']})."] and note in err[0]
    results = world.search()
    assert sorted(r["raster_name"] for r in results) == ["a"] * 6 + ["b"] * 4
    np.testing.assert_array_equal(np.load(world.folder("a") / "ids.npy"), pristine_ids)


def test_rebuilding_reembeds_only_what_the_catalog_cannot_vouch_for(world):
    folder = world.folder("a")
    _sql(folder / "catalog.sqlite", "DELETE FROM tiles WHERE id IN (1, 4)")
    (folder / "index.faiss").unlink()
    code, out, _ = world.run("index", str(world.root / "a.tif"), "--json")
    assert code == 0 and json.loads(out)[0]["resumed_from"] == 4  # tiles 1 and 4 embedded again, not 6


def _stale(world):
    os.utime(world.root / "a.tif", ns=(0, 10**18))


def _moved(world):
    (world.root / "a.tif").rename(world.root / "a-moved.tif")


@pytest.mark.parametrize(("change", "warning"), [(_stale, "changed after it was indexed"),
                                                 (_moved, "is no longer at")], ids=["touched", "moved"])
def test_a_changed_or_moved_raster_is_not_searched_twice_or_as_a_ghost(world, change, warning):
    change(world)
    code, out, err = world.run("search", "fields", "--top-k", "20", "--json")
    (line,) = err
    assert code == 0 and warning in line and {r["raster_name"] for r in json.loads(out)} == {"b"}
    code, out, err = world.run("list")
    assert code == 0 and "a.tif" not in out and len(err) == 1 and warning in err[0]
    path = world.root / ("a.tif" if change is _stale else "a-moved.tif")
    assert world.run("index", str(path), "--json")[0] == 0
    results = world.search()  # the new index replaced the stale one (touched), or stands beside it (moved)
    assert sorted(r["tile_id"] for r in results) == sorted({r["tile_id"] for r in results})
    assert {r["raster"] for r in results if r["raster_name"].startswith("a")} == {str(path)}
    if change is _stale:
        assert len(list(world.cache.glob("indexes/*/meta.json"))) == 2


def test_the_example_tile_is_excluded_and_ids_are_strict(world):
    example = f"{world.key('a')}:1:2"
    code, out, err = world.run("similar", "--tile", example, "--top-k", "20", "--json")
    assert code == 0 and not err and example not in [r["tile_id"] for r in json.loads(out)]
    assert len(json.loads(out)) == 9


# (id, argv with {a}/{k}/{tmp} placeholders, phrase of the one error sentence)
BAD = [
    ("tile-leading-zero", ["similar", "--tile", "{k}:01:02"], "is not a tile id"),
    ("tile-whitespace", ["similar", "--tile", " {k}:1:2"], "is not a tile id"),
    ("tile-arabic-indic", ["similar", "--tile", "{k}:\u0661:\u0662"], "is not a tile id"),
    ("tile-superscript", ["similar", "--tile", "{k}:\u00b9:2"], "is not a tile id"),
    ("tile-col-outside", ["similar", "--tile", "{k}:0:3"], "outside the grid of 'a' (rows 0 to 1, columns 0 to 2)"),
    ("tile-far-outside", ["similar", "--tile", "{k}:99:99"], "Tile {k}:99:99 is outside the grid"),
    ("tile-unknown-key", ["similar", "--tile", "deadbeef:0:0"], "There is no tile 'deadbeef:0:0'"),
    ("tile-negative-example", ["search", "x", "--not-tile", "{k}:0:-1"], "is not a tile id"),
    ("crs-unknown-code", ["search", "x", "--bbox", "0", "0", "1", "1", "--crs", "EPSG:999999"],
     "'EPSG:999999' is not a coordinate reference system"),
    ("crs-words", ["similar", "--at", "0", "0", "--crs", "not a crs"], "'not a crs' is not a coordinate"),
    ("bbox-inverted", ["search", "x", "--bbox", "500090", "3999950", "500010", "3999990"], "empty or inverted"),
    ("bbox-inverted-lonlat", ["search", "x", "--bbox", "15.2", "36.2", "15.1", "36.1", "--crs", "EPSG:4326"],
     "empty or inverted"),
    ("bbox-lat-first", ["search", "x", "--bbox", "36.1", "95", "36.2", "96", "--crs", "EPSG:4326"],
     "give longitude before latitude"),
    ("bbox-nan", ["search", "x", "--bbox", "nan", "0", "1", "1"], "argument --bbox: takes a finite number"),
    ("out-folder", ["search", "x", "--out", "{tmp}/d.gpkg"], "is a folder"),
    ("out-not-gpkg", ["search", "x", "--out", "{tmp}/notes.gpkg"], "exists and is not a GeoPackage"),
    ("out-suffix", ["search", "x", "--out", "{tmp}/r.shp"], "must end in .gpkg"),
    ("out-no-folder", ["search", "x", "--out", "{tmp}/nowhere/r.gpkg"], "does not exist"),
    ("batch-size-negative", ["index", "{a}", "--batch-size", "-3"], "argument --batch-size: must be at least 1"),
    ("top-k-zero", ["search", "x", "--top-k", "0"], "argument --top-k: must be at least 1, not 0"),
    ("tile-size-word", ["index", "{a}", "--tile-size", "big"], "argument --tile-size: takes a whole number"),
    ("overlap-nan", ["index", "{a}", "--overlap", "nan"], "argument --overlap: takes a finite number"),
    ("overlap-one", ["index", "{a}", "--overlap", "1"], "overlap must be a fraction"),
    ("unknown-option", ["search", "x", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ("empty-query", ["search", " "], "The query is empty"),
    ("raster-not-indexed", ["search", "x", "--raster", "{tmp}/zzz.tif"], "None of the --raster files"),
    ("truncated-tiff", ["index", "{tmp}/trunc.tif", "--json"], "the file may be truncated or damaged"),
    ("tiny-truncated-tiff", ["index", "{tmp}/trunc1k.tif", "--json"], "the file may be truncated or damaged"),
    ("not-a-raster", ["index", "{tmp}/notes.gpkg"], "is not a raster that GDAL can read"),
    ("bands", ["index", "{a}", "--bands", "1,x"], "--bands takes"),
]


@pytest.mark.parametrize(("argv", "phrase"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_sentence_and_exit_2(world, argv, phrase):
    (world.root / "d.gpkg").mkdir()
    (world.root / "notes.gpkg").write_text("my notes")
    big = write_geotiff(world.root / "trunc.tif", textured_rgb(512, 512), compress="deflate", tiled=True)
    shutil.copy(big, world.root / "trunc1k.tif")
    os.truncate(big, big.stat().st_size // 3)
    os.truncate(world.root / "trunc1k.tif", 1024)
    folders = sorted(world.cache.glob("indexes/*"))
    values = {"a": str(world.root / "a.tif"), "k": world.key("a"), "tmp": str(world.root)}
    code, out, err = world.run(*[a.format(**values) for a in argv])
    assert code == 2 and not out
    (line,) = err  # nothing before it: no traceback, no GDAL messages, no usage block
    assert line.startswith("error: ") and phrase.format(**values) in line, line
    assert sorted(world.cache.glob("indexes/*")) == folders  # no partial index of a file that cannot be read
    assert (world.root / "notes.gpkg").read_text() == "my notes"
    assert not [p for p in world.root.rglob("*") if ".tmp" in p.name]


def test_a_changed_model_is_named_as_such(world):
    for name in ("a", "b"):
        meta_path = world.folder(name) / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["model"]["sha256"] = "0" * 64  # an index made by earlier weights of a model with the same name
        meta_path.write_text(json.dumps(meta))
    code, _, err = world.run("search", "fields")
    assert code == 2 and err == [err[0]] and "has changed since the rasters were indexed" in err[0]


# (id, argv, phrase of the one warning line): a correct (empty or meaningless) answer, and why
WARN = [
    ("bbox-elsewhere", ["search", "x", "--bbox", "10", "10", "11", "11", "--crs", "EPSG:4326"],
     "no indexed tile lies inside the --bbox 10 10 11 11 (in EPSG:4326)"),
    ("bbox-swapped-axes", ["search", "x", "--bbox", "3999950", "500010", "3999990", "500090"],
     "no indexed tile lies inside"),
    ("emoji-query", ["search", "\U0001f600\U0001f600"], "knows none of the words"),
    ("punctuation-negative", ["search", "fields", "--not", "?!"], "knows none of the words in '?!'"),
]


@pytest.mark.parametrize(("argv", "phrase"), [w[1:] for w in WARN], ids=[w[0] for w in WARN])
def test_a_meaningless_query_says_why(world, argv, phrase):
    code, out, err = world.run(*argv)
    (line,) = err
    assert code == 0 and line.startswith("warning: ") and phrase in line, line
    assert "results for" in out


def test_interrupting_a_search_says_nothing_about_batches(world, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("rs_text_search.core.search.Searcher.search", interrupted)
    assert world.run("search", "fields") == (130, "", ["Interrupted."])


def test_a_cache_that_cannot_be_created(world, monkeypatch):
    monkeypatch.setenv("RS_TEXT_SEARCH_CACHE", "/proc/no-such-place/cache")
    assert world.run("list") == (0, "", [])
    code, _, err = world.run("search", "fields")
    assert code == 2 and len(err) == 1 and "Nothing is indexed" in err[0]
    code, _, err = world.run("index", str(world.root / "a.tif"))
    assert code == 2 and err == ["error: The cache folder '/proc/no-such-place/cache' cannot be created (No such "
                                 "file or directory); set RS_TEXT_SEARCH_CACHE to a folder you can write."]


def _in_namespace(world: World, script: str, *argv: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    """Run the command line after ``script`` (mounts) in a private mount namespace; skips without one."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs a private mount namespace (unshare -m) to make a read-only or full file system")
    command = [sys.executable, "-m", "rs_text_search", *argv, "--model", str(world.model_dir), "--provider", "cpu"]
    env = {**os.environ, "RS_TEXT_SEARCH_CACHE": str(cache or world.cache)}
    result = subprocess.run(["unshare", "-m", "sh", "-c", f'{script} && exec "$@"', "sh", *command], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    if "mount:" in result.stderr:
        pytest.skip(f"mounting is not allowed here: {result.stderr.strip()}")
    return result


def test_searching_a_read_only_cache(world):
    cache = world.cache
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    read_only = f"mount --bind {cache} {cache} && mount -o remount,bind,ro {cache}"
    result = _in_namespace(world, read_only, "search", "fields", "--top-k", "20", "--json")
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert len(json.loads(result.stdout)) == 10
    assert _in_namespace(world, read_only, "list").stdout.count(" tiles, ") == 2
    result = _in_namespace(world, read_only, "index", str(world.root / "a.tif"), "--json")  # finished: nothing to write
    assert result.returncode == 0 and json.loads(result.stdout)[0]["embedded"] == 6
    other = write_geotiff(world.root / "c.tif", textured_rgb(64, 64))
    result = _in_namespace(world, read_only, "index", str(other), "--json")
    assert result.returncode == 2 and result.stderr.splitlines() == [result.stderr.strip()]
    assert "cannot be written; set RS_TEXT_SEARCH_CACHE" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before


def test_a_full_disk_while_indexing_is_one_sentence(world):
    small = world.root / "small-disk"
    small.mkdir()
    raster = write_geotiff(world.root / "c.tif", textured_rgb(1024, 1024), tiled=True)  # 1,024 tiles
    full = f"mount -t tmpfs -o size=64k tmpfs {small}"
    result = _in_namespace(world, full, "index", str(raster), "--json", cache=small / "cache")
    assert result.returncode == 2 and result.stderr.splitlines() == [result.stderr.strip()]
    assert "is full; free some space and run again" in result.stderr


def test_a_full_disk_while_exporting_is_one_sentence(world):
    small = world.root / "small-disk"
    small.mkdir()
    result = _in_namespace(world, f"mount -t tmpfs -o size=16k tmpfs {small}", "search", "fields",
                           "--out", str(small / "r.gpkg"))
    assert result.returncode == 2 and result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert "is full; free some space" in result.stderr


def test_the_library_leaves_a_damaged_index_out_with_a_sentence(world, tiny_model):
    """What the plugin meets: a Searcher over a damaged index and a healthy one searches the healthy one."""
    from rs_text_search.core.errors import IndexDamagedError
    from rs_text_search.core.index import TileIndex
    from rs_text_search.core.search import Searcher

    _sql(world.folder("a") / "catalog.sqlite", "DELETE FROM tiles WHERE id = 0")
    indexes = [TileIndex.open(world.folder(name)) for name in ("a", "b")]
    searcher = Searcher(tiny_model, indexes)
    assert [index.raster_name for index in searcher.indexes] == ["b"]
    assert searcher.skipped == ["The index of 'a' cannot be used (its catalog holds 5 of the 6 tiles it should); "
                                "index the raster again to rebuild it."]
    with pytest.raises(IndexDamagedError, match="^The index of 'a' cannot be used"):
        Searcher(tiny_model, indexes[:1])


def test_a_damaged_page_inside_the_catalog_is_found_by_index(world):
    """Sizes and header intact, a page overwritten: a search meets it in one sentence at worst (searches skip
    the whole-file quick_check), and the next ``index`` finds it and embeds the raster again."""
    catalog = world.folder("a") / "catalog.sqlite"
    page = 4096
    for number in range(1, catalog.stat().st_size // page):
        _overwrite(catalog, number * page, b"\xa5" * page)
    code, out, err = world.run("search", "fields", "--top-k", "20", "--json")
    assert (code, len(err)) in ((0, 0), (0, 1), (2, 1)), err
    assert code == 0 or "catalog is damaged; index the raster again" in err[0]
    code, out, err = world.run("index", str(world.root / "a.tif"), "--json")
    assert code == 0 and json.loads(out)[0]["resumed_from"] == 0 and "every tile is embedded again" in err[0]
    assert sorted(r["raster_name"] for r in world.search()) == ["a"] * 6 + ["b"] * 4
