"""Labelled image folders (one subfolder per class, e.g. AID) as caption data, and zero-shot scoring.

A scene-classification folder has no captions, only class names. Each class name becomes a
phrase (``RailwayStation`` -> ``railway station``, ``storage_tanks`` -> ``storage tanks``) and
each image gets every caption of :data:`TEMPLATES` filled with it, so an epoch draws a varied
wording per image. The same templates, averaged per class, are the zero-shot classifier of
:func:`zero_shot_scores` (prompt ensembling, as CLIP's zero-shot ImageNet evaluation does).

The validation split is fixed by the folder's own content, not by the run: per class, the
``holdout`` images whose names hash lowest (SHA-1 of ``class/name``) are ``val``, the rest
``train``. Adding images to a class never moves an existing image from ``train`` to ``val``
unless it hashes below the held-out ones, and no seed has to be remembered.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from .data import ImageRecord

__all__ = ["IMAGE_SUFFIXES", "TEMPLATES", "class_phrase", "class_captions", "load_class_folder", "zero_shot_scores",
           "class_embeddings"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}

# Wordings an analyst might type for a scene; "{}" is the class phrase. The first is the one the
# issue measured the old model with ("an aerial image of a {class}").
TEMPLATES = (
    "an aerial image of a {}",
    "a satellite image of a {}",
    "an aerial photograph showing a {}",
    "a {} seen from above",
    "an overhead view of a {}",
    "a remote sensing image of a {}",
    "there is a {} in this picture",
    "a top-down view of a {} area",
)


def class_phrase(name: str) -> str:
    """Folder name to words: CamelCase, snake_case and kebab-case split, lower case."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return " ".join(re.split(r"[\s_\-]+", words)).strip().lower()


def class_captions(name: str, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    phrase = class_phrase(name)
    return [template.format(phrase) for template in templates]


def _held_out(folder_name: str, names: list[str], holdout: int) -> set[str]:
    def key(name: str) -> str:
        return hashlib.sha1(f"{folder_name}/{name}".encode()).hexdigest()

    return set(sorted(names, key=key)[:holdout])


def load_class_folder(
    folder: str | Path, split: str | None, holdout: int = 20, label_offset: int = 0
) -> tuple[list[ImageRecord], list[str]]:
    """Records of ``split`` (``train``, ``val`` or None for all) and the class names, sorted.

    Labels are ``label_offset + index`` of the class in sorted order. Raises ValueError for a
    folder without class subfolders of images, or a class with no training image left.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder '{folder}' does not exist")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    records: list[ImageRecord] = []
    kept: list[str] = []
    for class_name in classes:
        names = sorted(
            p.name for p in (folder / class_name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not names:
            continue
        if len(names) <= holdout:
            raise ValueError(
                f"class '{class_name}' in '{folder}' has {len(names)} images: not more than the {holdout} held out"
            )
        label = label_offset + len(kept)
        kept.append(class_name)
        val = _held_out(class_name, names, holdout)
        captions = class_captions(class_name)
        for name in names:
            image_split = "val" if name in val else "train"
            if split is None or split == image_split:
                records.append(ImageRecord(folder / class_name / name, list(captions), image_split, label))
    if not kept:
        raise ValueError(f"'{folder}' has no class subfolders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return records, kept


def zero_shot_scores(image_emb: np.ndarray, labels: np.ndarray, class_emb: np.ndarray) -> dict[str, float]:
    """Top-1 / top-5 accuracy of nearest class embedding (all L2-normalised), in [0, 1].

    image_emb [N, D], labels [N] (0-based class index), class_emb [C, D]: the mean of a class's
    template embeddings, normalised again. Ties resolve to the lower class index (stable sort).
    """
    if len(image_emb) == 0:
        raise ValueError("zero-shot scoring needs at least one image")
    scores = image_emb @ class_emb.T
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.argmax(order == np.asarray(labels)[:, None], axis=1)
    return {
        "top1": float(np.mean(rank < 1)),
        "top5": float(np.mean(rank < min(5, class_emb.shape[0]))),
        "n_images": int(len(image_emb)),
        "n_classes": int(class_emb.shape[0]),
    }


def class_embeddings(embed_texts, classes: list[str]) -> np.ndarray:
    """[C, D] prompt-ensembled class embeddings from ``embed_texts(list[str]) -> [M, D]`` (normalised)."""
    texts = [caption for name in classes for caption in class_captions(name)]
    emb = np.asarray(embed_texts(texts), dtype=np.float32).reshape(len(classes), len(TEMPLATES), -1).mean(axis=1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)
