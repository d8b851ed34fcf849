"""training.scene_check on a real shared scene and a tiny real model directory; evaluate's test-time views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training

MASS = "massachusetts_22978945_15.tif"


def test_scene_check_ranks_the_labelled_regions(tiny_model_dir: Path, shared_data: Path, tmp_path: Path, capsys,
                                                monkeypatch):  # fmt: skip
    from training.scene_check import LABELS, main, scene_check

    scene = shared_data / "scenes" / MASS
    if not scene.is_file():
        pytest.skip(f"{scene} not found")
    folder = tmp_path / "scenes"
    folder.mkdir()
    (folder / MASS).symlink_to(scene)
    result = scene_check(tiny_model_dir, folder, top_k=3)
    assert sorted(result["missing"]) == sorted(n for n in LABELS if n != MASS)
    rows = result["rows"]
    assert [r["label"] for r in rows] == list(LABELS[MASS])
    tiles = rows[0]["tiles"]
    windows = result["drawn"][MASS]["windows"]
    assert len(windows) == tiles and all(len(result["drawn"][MASS]["top"][r["label"]]) == 3 for r in rows)
    for row in rows:  # the first hit decides hit@3, and chance is a probability
        assert (row["first_hit_rank"] is not None and row["first_hit_rank"] <= 3) == row["hit_at_3"]
        assert 0 < row["chance"] < 1
    # a box holding every tile centre makes every query hit at rank 1 with certainty
    with monkeypatch.context() as patch:
        patch.setattr("training.scene_check.LABELS", {MASS: {"water": [(0, 0, 10_000, 10_000)]}})
        everything = scene_check(tiny_model_dir, folder, top_k=1)["rows"][0]
    assert everything["first_hit_rank"] == 1 and everything["hit_at_1"] and everything["chance"] == 1.0

    plot = tmp_path / "scenes.png"
    assert main(["--model", str(tiny_model_dir), "--scenes", str(folder), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "queries put a labelled tile in the top 5" in out and plot.stat().st_size > 10_000
    assert main(["--model", str(tiny_model_dir), "--scenes", str(tmp_path / "none")]) == 2
    assert main(["--model", str(tiny_model_dir), "--scenes", str(tmp_path), "--json"]) == 2  # no labelled scene
    assert main(["--model", str(tiny_model_dir), "--scenes", str(folder), "--top-k", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


def test_test_time_views_average_rotations() -> None:
    from training.evaluate import TTA_VIEWS, with_views

    seen = []

    def embed(pixels):  # the top-left pixel's red value on one axis: tells the views apart
        seen.append([int(p[0, 0, 0]) for p in pixels])
        return np.array([[float(p[0, 0, 0]), 1.0] for p in pixels])

    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0, 0], image[0, 1, 0], image[1, 1, 0], image[1, 0, 0] = 10, 20, 30, 40
    assert with_views(embed, "none") is embed
    out = with_views(embed, "rot4")([image])
    assert sorted(v[0] for v in seen) == [10, 20, 30, 40]  # each corner comes to the top-left once
    expected = np.array([100.0, 4.0]) / np.linalg.norm([100.0, 4.0])
    assert np.allclose(out[0], expected)
    seen.clear()
    with_views(embed, "d8")([image])
    assert len(seen) == len(TTA_VIEWS["d8"]) == 8
