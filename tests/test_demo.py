"""`make demo`'s job end to end on a generated raster and a real tiny model."""

import re

from rs_text_search.demo import QUERIES, main


def test_demo_writes_geopackages_and_a_map(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("RS_TEXT_SEARCH_CACHE", str(tmp_path / "cache"))
    code = main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "out"), "--shared", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert code == 0
    assert "using a generated one" in out
    counts = re.search(r"indexed (\d+) tiles \((\d+) nodata and (\d+) constant", out).groups()
    embedded, nodata, constant = map(int, counts)
    assert embedded + nodata + constant == 32 * 32 and constant > 0  # the lake's flat water is skipped
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "demo_map.png" in written and "similar.gpkg" in written
    assert len([name for name in written if name.endswith(".gpkg")]) == len(QUERIES) + 1
    assert (tmp_path / "out" / "demo_map.png").stat().st_size > 10_000
