"""training.scale_check on real UCM-Captions images and a tiny real model directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.training


@pytest.fixture
def model_with_ground(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model, its manifest saying it was trained on UCM (0.3048 m pixels, 256 px images) at 32 px."""
    model = tmp_path / "tiny-ucm"
    shutil.copytree(tiny_model_dir, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["ground_m_per_px"] = 0.3048 * 256 / manifest["image"]["size"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    return model


def test_tiles_per_scheme_and_identical_scores_where_they_agree(model_with_ground, shared_data, tmp_path, capsys):
    from training.scale_check import main

    data = shared_data / "ucm_captions" / "dataset.json"
    plot = tmp_path / "scale.png"
    argv = ["--model", str(model_with_ground), "--data", str(data), "--limit", "12", "--ground-m", "2.4384", "0.3048",
            "--plot", str(plot), "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["ground_m"], r["scheme"]): r for r in result["rows"]}
    assert result["n_images"] == 12 and result["image_ground_m"] == 0.3048  # from the dataset's name
    # At the model's own ground resolution both schemes cut the same 32 px tile: the same scores.
    same = rows[(2.4384, "automatic")], rows[(2.4384, "input size")]
    assert same[0]["tile_px"] == same[1]["tile_px"] == 32
    assert {k: v for k, v in same[0].items() if k != "scheme"} == {k: v for k, v in same[1].items() if k != "scheme"}
    # At the images' own 0.3 m the automatic tile covers the 78 m image (256 px); the input-size one 9.8 m.
    assert rows[(0.3048, "automatic")]["tile_px"] == 256 and rows[(0.3048, "input size")]["tile_px"] == 32
    assert plot.stat().st_size > 10_000


def test_a_model_without_ground_resolution_is_refused(tiny_model_dir, shared_data, capsys):
    from training.scale_check import main

    data = shared_data / "ucm_captions" / "dataset.json"
    assert main(["--model", str(tiny_model_dir), "--data", str(data), "--ground-m", "1"]) == 2
    assert "records no ground_m_per_px" in capsys.readouterr().err
    assert main(["--model", str(tiny_model_dir), "--data", str(data), "--ground-m", "0"]) == 2
