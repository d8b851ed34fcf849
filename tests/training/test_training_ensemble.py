"""training.ensemble: two exported models become one model directory the engine loads, whose embeddings are
the members' own, weighted and concatenated; members that cannot be combined are refused in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training

TEXTS = ["many planes are parked next to a long building", "a dense forest", "a river crosses the town"]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from training.testing import make_tiny_model_dir

    folder = tmp_path_factory.mktemp("members")
    return (make_tiny_model_dir(folder / "big", seed=0, image_size=32),
            make_tiny_model_dir(folder / "small", seed=1, image_size=16))


def test_ensemble_embeddings_are_the_weighted_members(members, tmp_path: Path) -> None:
    from rs_text_search.core.model import load_model
    from training.ensemble import main

    big, small = members
    out = tmp_path / "ensemble"
    assert main(["--member", str(big), "--member", str(small), "--weights", "3,1", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embed_dim"] == 64 and manifest["image"]["size"] == 32
    assert [m["weight"] for m in manifest["training"]["ensemble"]] == [0.75, 0.25]
    ensemble, own_big, own_small = (load_model(d, provider="cpu") for d in (out, big, small))

    text = ensemble.embed_texts(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(text[:, :32], np.sqrt(0.75) * own_big.embed_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(text[:, 32:], np.sqrt(0.25) * own_small.embed_texts(TEXTS), atol=1e-5)

    # Images constant over 2x2 blocks: the graph's area shrink to 16 px is then exactly the 16 px image.
    rng = np.random.default_rng(0)
    small_images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    images = small_images.repeat(2, axis=1).repeat(2, axis=2)
    vectors = ensemble.embed_images(images)
    np.testing.assert_allclose(vectors[:, :32], np.sqrt(0.75) * own_big.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(vectors[:, 32:], np.sqrt(0.25) * own_small.embed_images(small_images), atol=1e-5)
    scores = vectors @ text.T  # a cosine of the ensemble is the weighted sum of the members' cosines
    expected = (0.75 * own_big.embed_images(images) @ own_big.embed_texts(TEXTS).T
                + 0.25 * own_small.embed_images(small_images) @ own_small.embed_texts(TEXTS).T)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_a_shared_tower_is_stored_and_computed_once(members, tmp_path: Path) -> None:
    import onnx

    from training.ensemble import main

    big, _ = members
    out = tmp_path / "twice"
    assert main(["--member", str(big), "--member", str(big), "--out", str(out)]) == 0
    for name in ("image.onnx", "text.onnx"):
        merged, own = onnx.load(str(out / name)), onnx.load(str(big / name))
        assert len(merged.graph.initializer) <= len(own.graph.initializer) + 3  # + shrink-free weight constants
        assert len(merged.graph.node) <= len(own.graph.node) + 4  # Identity, Mul, Concat: the tower once


def test_members_with_different_tokenizers_are_refused(members, tmp_path: Path, capsys) -> None:
    from training.ensemble import main
    from training.testing import make_tiny_model_dir

    other = make_tiny_model_dir(tmp_path / "wordpiece", seed=2, tokenizer="wordpiece")
    out = tmp_path / "refused"
    assert main(["--member", str(members[0]), "--member", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "tokenizer" in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    assert main(["--member", str(members[0]), "--out", str(out)]) == 2
    assert main(["--member", str(members[0]), "--member", str(tmp_path), "--out", str(out)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_a_projection_fitted_on_train_keeps_the_index_small(members, shared_data: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from rs_text_search.core.model import load_model
    from training.ensemble import main

    big, small = members
    out = tmp_path / "projected"
    captions = shared_data / "ucm_captions" / "dataset.json"
    assert main(["--member", str(big), "--member", str(small), "--out", str(out), "--project-dim", "16",
                 "--project-data", str(captions), "--project-limit", "40", "--data", str(captions)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embed_dim"] == 16 and manifest["export"]["projection"]["dim"] == 16
    assert manifest["metrics"]["split"] == "val" and 0 <= manifest["metrics"]["mR"] <= 100
    (projection,) = [numpy_helper.to_array(t) for t in onnx.load(str(out / "text.onnx")).graph.initializer
                     if t.name == "projection"]
    np.testing.assert_allclose(projection.T @ projection, np.eye(16), atol=1e-5)  # orthonormal singular vectors
    ensemble, own_big, own_small = (load_model(d, provider="cpu") for d in (out, big, small))
    concatenated = np.concatenate([np.sqrt(0.5) * own_big.embed_texts(TEXTS),
                                   np.sqrt(0.5) * own_small.embed_texts(TEXTS)], axis=1) @ projection
    expected = concatenated / np.linalg.norm(concatenated, axis=1, keepdims=True)
    np.testing.assert_allclose(ensemble.embed_texts(TEXTS), expected, atol=1e-5)
    assert main(["--member", str(big), "--member", str(small), "--out", str(tmp_path / "x"),
                 "--project-dim", "16"]) == 2  # a projection needs data to be fitted on
