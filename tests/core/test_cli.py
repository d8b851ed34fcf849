"""The command line, driven through its real entry point: outputs, exit codes, bad input."""

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
from tests.core.conftest import textured_rgb, tiles_raster, write_geotiff

SEEDS = [[1, 2, 3], [4, 5, 1]]
REPO = Path(__file__).resolve().parents[2]


def test_index_search_similar_and_export(run, tmp_path):
    raster = tiles_raster(tmp_path / "scene.tif", 32, SEEDS)
    code, out, err = run("index", str(raster), "--json")
    assert code == 0, err
    (summary,) = json.loads(out)
    assert summary["embedded"] == 6 and summary["tiles"] == 6 and summary["tile_px"] == 32

    code, out, _ = run("search", "tennis", "court", "--top-k", "3", "--json")
    results = json.loads(out)
    assert code == 0 and [r["rank"] for r in results] == [1, 2, 3]
    assert {"score", "tile_id", "raster", "bounds", "crs_wkt"} <= set(results[0])

    gpkg = tmp_path / "similar.gpkg"
    tile = results[0]["tile_id"]
    code, out, err = run("similar", "--tile", tile, "--top-k", "2", "--out", str(gpkg))
    assert code == 0, err
    assert "rank" in out and f"wrote {gpkg}" in out
    import pyogrio

    assert pyogrio.read_info(gpkg)["features"] == 2

    code, out, _ = run("similar", "--at", "500010", "3999990", "--crs", "EPSG:32633", "--json")
    assert code == 0 and json.loads(out)[0]["score"] == pytest.approx(1.0, abs=1e-4)  # tile (0,0) = (1,2)

    code, out, _ = run("list", "--json")
    assert code == 0 and json.loads(out)[0]["tiles"] == 6


def test_raster_without_crs_is_indexed_in_pixel_coordinates(run, tmp_path):
    raster = write_geotiff(tmp_path / "plain.tif", textured_rgb(64, 64), crs=None)
    code, _, err = run("index", str(raster))
    assert code == 0 and "no CRS" in err
    # Each note on its own line, before the progress bar: which tile size, and why.
    assert "plain: 32 px tiles, the model's input size (the model records no training ground resolution).\n" in err
    assert err.index("no CRS") < err.index("32 px tiles") < err.index("tile/s")
    code, out, _ = run("similar", "--at", "10", "10", "--json")
    assert code == 0 and json.loads(out)[0]["crs_wkt"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "{tmp}/missing.tif"], "does not exist"),
        (["index", "{tmp}/notes.tif"], "not a raster"),
        (["index", "{tmp}/empty.tif"], "no tile with image content"),
        (["index", "{tmp}/trunc.tif"], "failed at pixel window"),
        (["index", "{tmp}/two.tif"], "two bands"),
        (["index", "{tmp}/scene.tif", "--bands", "1,x"], "--bands takes"),
        (["search", " "], "empty"),
        (["similar", "--tile", "deadbeef:9:9"], "no tile"),
        (["search", "roads", "--out", "{tmp}/nowhere/x.gpkg"], "does not exist"),
        (["search", "roads", "--raster", "{tmp}/empty.tif"], "is indexed with this model"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(run, tmp_path, argv, message):
    scene = tiles_raster(tmp_path / "scene.tif", 32, SEEDS)
    (tmp_path / "notes.tif").write_text("not a raster")
    write_geotiff(tmp_path / "empty.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    write_geotiff(tmp_path / "two.tif", textured_rgb(32, 32)[:2])
    big = write_geotiff(tmp_path / "trunc.tif", textured_rgb(512, 512), compress="deflate", tiled=True)
    os.truncate(big, big.stat().st_size // 3)
    assert run("index", str(scene))[0] == 0
    code, out, err = run(*[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    (sentence,) = [line for line in err.splitlines() if line.startswith("error: ")]  # after any progress bar
    assert message in sentence and err.rstrip().endswith(sentence)
    assert not list(tmp_path.glob("**/*.gpkg"))


def test_missing_model_is_exit_2(cache, capsys, tmp_path):
    assert main(["search", "roads", "--model", str(tmp_path / "no-model")]) == 2
    assert "No model directory" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_keeps_finished_batches_and_the_next_run_resumes(cache, tiny_model_dir, tmp_path):
    raster = write_geotiff(tmp_path / "big.tif", textured_rgb(4096, 4096), tiled=True)  # 16,384 tiles
    argv = [sys.executable, "-m", "rs_text_search", "index", str(raster), "--model", str(tiny_model_dir),
            "--provider", "cpu", "--batch-size", "16", "--json"]
    env = {**os.environ, "RS_TEXT_SEARCH_CACHE": str(cache)}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed, deadline = 0, time.time() + 120
    while time.time() < deadline and committed == 0 and process.poll() is None:  # interrupt after the first batches
        for catalog in cache.glob("indexes/*/catalog.sqlite"):
            try:
                with closing(sqlite3.connect(catalog, timeout=1)) as db:
                    committed = db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
            except sqlite3.OperationalError:  # the table is being created
                pass
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "next run resumes" in err
    finished = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    (summary,) = json.loads(finished.stdout)
    assert 0 < summary["resumed_from"] < 128 * 128 and summary["embedded"] == 128 * 128
