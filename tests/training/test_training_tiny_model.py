"""The tiny test model directory loads in the engine and its ONNX matches torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training


def test_tiny_model_dir_loads_in_engine(tiny_model_dir: Path) -> None:
    from rs_text_search.core.model import load_model

    model = load_model(tiny_model_dir, provider="cpu")
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert set(manifest["files"]) == {"image.onnx", "text.onnx", "vocab/bpe_simple_vocab_16e6.txt.gz"}
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)
    image_vectors = model.embed_images(images)
    text_vectors = model.embed_texts(["an airport with planes", "a dense forest"])
    assert image_vectors.shape == (3, 32) and text_vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1.0, atol=1e-5)
    assert max(manifest["export"]["parity"].values()) < 1e-4


@pytest.mark.parametrize("tokenizer", ["clip_bpe", "wordpiece"])
def test_engine_tokenizer_matches_training(tmp_path: Path, tokenizer: str) -> None:
    from rs_text_search.core.model import load_model
    from training.models import make_tokenizer
    from training.testing import make_tiny_model_dir

    directory = make_tiny_model_dir(tmp_path / tokenizer, seed=1, tokenizer=tokenizer)
    model = load_model(directory, provider="cpu")
    spec = json.loads((directory / "manifest.json").read_text())["text"]["tokenizer"]
    texts = ["Many planes are parked at the airport.", "a  river,crosses  the FOREST"]
    expected = make_tokenizer(spec)(texts).numpy()
    np.testing.assert_array_equal(model.tokenize(texts)["input_ids"], expected)
