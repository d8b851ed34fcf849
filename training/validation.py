"""What ``training.fit`` measures every epoch, and the one number that selects ``best.pt``.

* retrieval on the caption data's validation split: R@1/5/10 both ways and mR (published
  protocol), the same with rank-fusion re-ranking;
* ``tag_p10``: the object-tag query figure (:func:`training.tags.tag_precision`) on the same
  validation images, when a tag table is given;
* ``zs_top1`` / ``zs_top5``: zero-shot scene classification of a class folder's held-out
  images with the template prompts (:mod:`training.folder_data`), when a folder is given.

The figures are computed by the same functions as ``training.evaluate``'s
(:func:`training.evaluate.retrieval_scores`, :func:`training.evaluate.folder_zero_shot`).
Captions are embedded once per distinct string (:func:`training.evaluate.embed_unique`), so
UCM's verbatim repeats stay exact ties however the captions are batched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rs_text_search.core.preprocess import ImageSpec, preprocess

from .data import ImageRecord, load_image
from .evaluate import embed_pixels_torch, folder_zero_shot, retrieval_scores, torch_text_embedder
from .tags import tag_precision

__all__ = ["Validator", "selection_score"]


def selection_score(row: dict[str, Any], how: str) -> float:
    """``mR``: val mR. ``combined``: mean of val mR, 100 x tag_p10 and 100 x zs_top1 (those measured)."""
    if how == "mR":
        return float(row["val_mR"])
    parts = [row["val_mR"]] + [100.0 * row[k] for k in ("val_tag_p10", "val_zs_top1") if k in row]
    return float(np.mean(parts))


class Validator:
    """Holds the preprocessed validation images; ``validator(model, device)`` returns ``val_*`` metrics."""

    def __init__(
        self,
        records: list[ImageRecord],
        image_spec: ImageSpec,
        tokenize,
        rerank_top_k: int = 10,
        tag_table: dict[str, set[str]] | None = None,
        folder_records: list[ImageRecord] | None = None,
        folder_classes: list[str] | None = None,
    ) -> None:
        self.records = records
        self.tokenize = tokenize
        self.rerank_top_k = rerank_top_k
        self.tag_table = tag_table
        self.folder_records = folder_records or []
        self.folder_classes = folder_classes or []
        self.last: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        # full resolution, exactly as the engine sees tiles
        self.pixels = torch.from_numpy(preprocess([load_image(r.path) for r in records], image_spec))
        self.folder_pixels = (
            torch.from_numpy(preprocess([load_image(r.path) for r in self.folder_records], image_spec))
            if self.folder_records else None
        )  # fmt: skip

    def __call__(self, model, device) -> dict[str, float]:
        embed_texts = torch_text_embedder(model, self.tokenize, device)
        image_emb = embed_pixels_torch(model, self.pixels, device)
        metrics, reranked = retrieval_scores(image_emb, self.records, embed_texts, True, self.rerank_top_k)
        self.last = (metrics, reranked)  # the full dicts, for best.pt's record
        row = {f"val_{k}": v for k, v in metrics.items() if not k.startswith("n_")}
        row["val_rerank_mR"] = reranked["mR"]
        if self.tag_table is not None:
            row["val_tag_p10"] = tag_precision(image_emb, self.records, self.tag_table, embed_texts).get("tag_p10", 0.0)
        if self.folder_pixels is not None:
            folder_emb = embed_pixels_torch(model, self.folder_pixels, device)
            zs = folder_zero_shot(folder_emb, self.folder_records, self.folder_classes, embed_texts)
            row["val_zs_top1"], row["val_zs_top5"] = zs["top1"], zs["top5"]
        return row
