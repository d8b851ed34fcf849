"""training.realign: a model's text side fitted to its frozen image tower, on a slice of real UCM-Captions,
through the real entry point; the image tower is untouched and bad input is one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("base") / "tiny", seed=4)


def test_realign_fits_the_text_side_and_leaves_the_image_tower(ucm_slice, base_model, tmp_path, capsys) -> None:
    import onnx
    from onnx import numpy_helper

    from rs_text_search.core.model import load_model
    from training.realign import main

    out = tmp_path / "aligned"
    args = ["--model", str(base_model), "--data", str(ucm_slice), "--out", str(out), "--split", "train",
            "--views", "rot4", "--epochs", "30", "--batch-size", "8", "--lr", "1e-2", "--no-progress"]
    assert main(args) == 0
    assert "train mR" in capsys.readouterr().out
    before = json.loads((base_model / "manifest.json").read_text())
    after = json.loads((out / "manifest.json").read_text())
    assert after["files"]["image.onnx"] == before["files"]["image.onnx"]  # the same image tower, byte for byte
    assert after["files"]["text.onnx"] != before["files"]["text.onnx"]
    realigned = after["training"]["realign"]
    assert realigned["n_images"] == 24 and realigned["views"] == "rot4" and len(realigned["loss_per_epoch"]) == 30
    assert realigned["loss_per_epoch"][-1] < realigned["loss_per_epoch"][0]
    assert {"mR", "rerank"} <= after["metrics"].keys() and "mR" in realigned["base"]["metrics"]

    initialisers = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out / "text.onnx")).graph.initializer}
    weight_t, bias = initialisers["text_map_w"], initialisers["text_map_b"]
    texts = ["many planes are parked next to a long building", "a dense forest", "a river crosses the town"]
    base, aligned = load_model(base_model, provider="cpu"), load_model(out, provider="cpu")
    mapped = base.embed_texts(texts) @ weight_t + bias
    np.testing.assert_allclose(aligned.embed_texts(texts), mapped / np.linalg.norm(mapped, axis=1, keepdims=True),
                               atol=1e-5)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(aligned.embed_images(pixels), base.embed_images(pixels))

    again = ["--model", str(out), "--data", str(ucm_slice), "--out", str(tmp_path / "twice"), "--no-progress"]
    assert main(again) == 2  # a second map on top of the first is refused: re-align the base instead
    assert "is already re-aligned" in capsys.readouterr().err and not (tmp_path / "twice").exists()



def test_the_fitted_map_undoes_a_rotated_text_space() -> None:
    """Captions whose embeddings are their images' turned by a random rotation (plus noise): the identity map
    retrieves at chance, the fitted one finds the images (the tiny random model's images are too alike to show
    learning end to end)."""
    from training.metrics import evaluate_scores
    from training.realign import fit_text_map

    rng = np.random.default_rng(0)
    n_images, dim = 40, 16
    images = rng.normal(size=(n_images, dim)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    owner = np.repeat(np.arange(n_images), 2)  # two captions an image
    texts = (images[owner] + 0.1 * rng.normal(size=(len(owner), dim)).astype(np.float32)) @ rotation.T
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    weight, bias, losses = fit_text_map(images[None], texts, np.arange(len(owner)), owner, logit_scale=10.0,
                                        epochs=150, lr=2e-2, batch_size=20, weight_decay=0.0, seed=0)
    mapped = texts @ weight.T + bias
    mapped /= np.linalg.norm(mapped, axis=1, keepdims=True)
    before, after = (evaluate_scores(images @ t.T, owner)["mR"] for t in (texts, mapped))
    assert losses[-1] < losses[0] / 2
    assert before < 40 and after > 90


@pytest.mark.parametrize("change, says", [
    ({"--model": "missing-model"}, "is not a model directory"),
    ({"--views": "d4"}, "--views must be one of"),
    ({"--epochs": "0"}, "--epochs must be at least 1"),
    ({"--data": "missing.json"}, "missing.json"),
])  # fmt: skip
def test_realign_refuses_bad_input_in_one_sentence(ucm_slice, base_model, tmp_path, capsys, change, says) -> None:
    from training.realign import main

    args = {"--model": str(base_model), "--data": str(ucm_slice), "--out": str(tmp_path / "aligned"),
            "--epochs": "2", **{k: str(tmp_path / v) if v.startswith("missing") else v for k, v in change.items()}}
    assert main([x for pair in args.items() for x in pair] + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written, no partial folder


def test_realign_keeps_an_existing_folder_without_overwrite(ucm_slice, base_model, tmp_path, capsys) -> None:
    from training.realign import main

    taken = tmp_path / "aligned"
    taken.mkdir()
    assert main(["--model", str(base_model), "--data", str(ucm_slice), "--out", str(taken), "--no-progress"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and list(taken.iterdir()) == []
