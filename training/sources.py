"""Training data from several sources: a caption file, optionally a labelled image folder and UCM tags.

:func:`load_sources` turns ``training.fit``'s data options into the records it trains and
validates on, and a summary of every source for ``params.json``, checkpoints and the exported
manifest. :class:`SourceSampler` draws an epoch with a sampling weight per source.

* caption data (``--data``): train and val splits as before; class labels by ``--labels``.
* a class folder (``--data-folder``): template captions per class (:mod:`training.folder_data`),
  labels after the caption data's classes, its own held-out ``val`` images for zero-shot
  accuracy. The images of one class are one positive group in the objectives: their captions
  are the same templates, so another image of the class is not a negative.
* object tags (``--tags FILE --tag-captions N``): N generated sentences per caption-data
  training image (:mod:`training.tags`); the tag table also feeds the tag query figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import ImageRecord, apply_labels, dataset_name, load_records, spread_subset
from .folder_data import load_class_folder
from .params import FitParams
from .tags import add_tag_captions, load_tags

__all__ = ["Sources", "load_sources", "SourceSampler"]


@dataclass
class Sources:
    train: list[ImageRecord]
    groups: np.ndarray  # positive group of each training record
    source_of: np.ndarray  # 0: caption data, 1: class folder
    val: list[ImageRecord]  # caption data's validation split (mR, tag figure)
    folder_val: list[ImageRecord] = field(default_factory=list)
    folder_classes: list[str] = field(default_factory=list)
    tag_table: dict[str, set[str]] | None = None
    n_classes: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


def load_sources(p: FitParams) -> Sources:
    """Every record ``p`` names, with labels, groups and extra captions applied; raises ValueError."""
    images_dir = Path(p.images) if p.images else None
    data = Path(p.data)
    train = spread_subset(load_records(data, p.train_split, images_dir), p.train_limit)
    val = spread_subset(load_records(data, p.val_split, images_dir), p.val_limit)
    labels = {"none": None, "auto": "ucm" if dataset_name(data) == "ucm" else None}.get(p.labels, p.labels)
    n_classes = apply_labels(train, labels)
    caption_classes = max([r.label for r in train], default=-1) + 1
    summary: dict[str, Any] = {
        "captions": {"file": str(data), "train_split": p.train_split, "val_split": p.val_split,
                     "n_train_images": len(train), "n_val_images": len(val), "weight": 1.0},
    }  # fmt: skip
    tag_table = None
    if p.tags:
        tag_table = load_tags(p.tags)
        tagged = add_tag_captions(train, tag_table, p.tag_captions)
        summary["tags"] = {"file": str(p.tags), "captions_per_image": p.tag_captions, "n_images_tagged": tagged}
    groups = np.arange(len(train))
    source_of = np.zeros(len(train), dtype=np.int64)
    folder_val: list[ImageRecord] = []
    classes: list[str] = []
    if p.data_folder:
        folder_train, classes = load_class_folder(p.data_folder, "train", p.folder_holdout, caption_classes)
        folder_val, _ = load_class_folder(p.data_folder, "val", p.folder_holdout, 0)
        folder_train = spread_subset(folder_train, p.train_limit)
        folder_val = spread_subset(folder_val, p.val_limit)
        # one positive group per class, numbered after the caption images
        groups = np.concatenate([groups, len(train) + np.array([r.label for r in folder_train])])
        source_of = np.concatenate([source_of, np.ones(len(folder_train), dtype=np.int64)])
        train = train + folder_train
        n_classes += len(classes)
        summary["folder"] = {"folder": str(p.data_folder), "classes": classes, "holdout_per_class": p.folder_holdout,
                             "n_train_images": len(folder_train), "n_val_images": len(folder_val),
                             "weight": p.folder_weight}  # fmt: skip
    return Sources(train, groups, source_of, val, folder_val, classes, tag_table, n_classes, summary)


class SourceSampler(torch.utils.data.Sampler):
    """An epoch with ``round(weight * size)`` draws per source, shuffled together.

    A weight of 1 takes every record of the source once; 0.5 a random half; 2.5 every record
    twice plus a random half. All randomness comes from ``generator`` (fit seeds it per epoch,
    so a resumed run draws the same epochs).
    """

    def __init__(self, source_of: np.ndarray, weights: dict[int, float], generator: torch.Generator) -> None:
        self.source_of = np.asarray(source_of)
        self.weights = weights
        self.generator = generator
        self.length = sum(int(round(weights.get(int(s), 1.0) * np.sum(self.source_of == s)))
                          for s in np.unique(self.source_of))  # fmt: skip

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        chosen = []
        for source in np.unique(self.source_of):
            members = torch.from_numpy(np.flatnonzero(self.source_of == source))
            count = int(round(self.weights.get(int(source), 1.0) * len(members)))
            whole, rest = divmod(count, len(members))
            for _ in range(whole):
                chosen.append(members)
            if rest:
                chosen.append(members[torch.randperm(len(members), generator=self.generator)[:rest]])
        order = torch.cat(chosen)
        order = order[torch.randperm(len(order), generator=self.generator)]
        return iter(order.tolist())
