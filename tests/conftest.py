"""Shared pytest fixtures (each engineer adds theirs; keep each one small and documented)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder ``../shared/data`` beside the checkout; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (CI clones the repo with ../shared beside it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-initialised CLIP (seed 0, CLIP BPE tokenizer) exported by the real exporter.

    A complete model directory (image.onnx, text.onnx, vocab/, manifest.json) about 8 MB in
    size, built once per session in about two seconds; needs torch and open_clip.
    """
    if importlib.util.find_spec("open_clip") is None:  # not imported here: it needs training._compat first
        pytest.skip("the tiny model fixture needs torch and open_clip (requirements/training)")
    from training.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")
