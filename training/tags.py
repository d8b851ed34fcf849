"""UCM object tags (``multilabels.tsv``): generated object captions for training, and a tag query figure.

UCM-Captions describes scenes with a small, repetitive vocabulary; analysts type objects
("cars", "water", "storage tanks"). The UCM multi-label table gives every image 17 presence
tags (airplane, bare-soil, buildings, cars, ..., water). Two uses:

* :func:`tag_captions`: for each *training* image, a few generated sentences naming its tags
  ("cars and pavement next to buildings seen from above"), drawn deterministically from the
  image name. They are added to the image's captions; validation captions are never touched,
  so the retrieval protocol (mR) stays the published one.
* :func:`tag_precision`: for each tag that some validation image carries, the plain phrase of
  :data:`TAG_QUERIES` as a text query over the validation images; precision@10 is the share
  of the top 10 carrying the tag, out of ``min(10, images with the tag)`` so a rare tag can
  still score 1. ``tag_p10`` is the mean over those tags.

Table rows name images by UC Merced class and index (``airplane00``); UCM-Captions image ``N``
is ``sorted(classes)[(N - 1) // 100]`` followed by ``(N - 1) % 100`` as two digits.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from .data import UCM_CLASSES, ImageRecord

__all__ = ["TAG_PHRASES", "TAG_QUERIES", "load_tags", "tags_for", "tag_captions", "add_tag_captions",
           "tag_precision"]  # fmt: skip

# Tag -> the words a caption uses for it.
TAG_PHRASES = {
    "airplane": "airplanes", "bare-soil": "bare soil", "buildings": "buildings", "cars": "cars",
    "chaparral": "chaparral shrubland", "court": "sports courts", "dock": "docks", "field": "fields",
    "grass": "grass", "mobile-home": "mobile homes", "pavement": "pavement", "sand": "sand",
    "sea": "the sea", "ship": "boats", "tanks": "storage tanks", "trees": "trees", "water": "water",
}  # fmt: skip
# Tag -> the plain query of the tag figure: short, as typed, not a training sentence.
TAG_QUERIES = {
    "airplane": "aircraft", "bare-soil": "bare ground", "buildings": "buildings", "cars": "cars",
    "chaparral": "shrubs", "court": "a tennis court", "dock": "a pier", "field": "a field",
    "grass": "grass", "mobile-home": "trailers", "pavement": "paved surfaces", "sand": "sand",
    "sea": "sea", "ship": "boats", "tanks": "tanks", "trees": "trees", "water": "water",
}  # fmt: skip
_TEMPLATES = (
    "an aerial image with {}",
    "{} seen from above",
    "an area of {}",
    "an overhead view of {}",
)


def load_tags(path: str | Path) -> dict[str, set[str]]:
    """``multilabels.tsv`` -> {row name (``airplane00``): set of tags present}."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tag table '{path}' does not exist")
    table: dict[str, set[str]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = next(rows, None)
        if not header or len(header) < 2:
            raise ValueError(f"'{path}' is not a tab-separated tag table (IMAGE then one column per tag)")
        tags = [t.strip() for t in header[1:]]
        for row in rows:
            if len(row) == len(header):
                table[row[0].strip()] = {tag for tag, flag in zip(tags, row[1:], strict=True) if flag.strip() == "1"}
    return table


def tags_for(record: ImageRecord, table: dict[str, set[str]]) -> set[str] | None:
    """Tags of a UCM-Captions image (``N.tif``/``N.jpg``), None when the table has no row for it."""
    stem = record.path.stem
    if not stem.isdigit() or not 1 <= int(stem) <= 100 * len(UCM_CLASSES):
        return None
    number = int(stem) - 1
    return table.get(f"{UCM_CLASSES[number // 100]}{number % 100:02d}")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def tag_captions(name: str, tags: set[str], count: int) -> list[str]:
    """``count`` sentences naming up to three of ``tags``, chosen deterministically from ``name``."""
    phrases = sorted(TAG_PHRASES.get(t, t.replace("-", " ")) for t in tags)
    if not phrases or count <= 0:
        return []
    seed = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    captions = []
    for i in range(count):
        chosen = [phrases[j] for j in rng.permutation(len(phrases))[: min(3, len(phrases))]]
        if "cars" in chosen and "pavement" in chosen:  # the analysts' phrase for the commonest pair
            chosen = ["cars parked on pavement"] + [c for c in chosen if c not in ("cars", "pavement")]
        if len(chosen) > 1 and i % 2:
            text = f"{chosen[0]} next to {_join(chosen[1:])}"
        else:
            text = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(_join(chosen))
        captions.append(text)
    return captions


def add_tag_captions(records: list[ImageRecord], table: dict[str, set[str]], count: int) -> int:
    """Append ``count`` tag captions to each record the table knows; returns how many records got some."""
    changed = 0
    for record in records:
        tags = tags_for(record, table)
        extra = tag_captions(record.path.name, tags or set(), count)
        if extra:
            record.captions.extend(extra)
            changed += 1
    return changed


def tag_precision(image_emb: np.ndarray, records: list[ImageRecord], table: dict[str, set[str]], embed_texts,
                  k: int = 10) -> dict[str, float]:  # fmt: skip
    """Precision@k of each tag's plain query over ``records`` (their embeddings ``image_emb``) and the mean.

    Returns ``{"tag_p10": mean, "tag_p10/<tag>": value, ...}``; tags no record carries are left out.
    Records the table does not know count as carrying no tag.
    """
    carried = [tags_for(r, table) or set() for r in records]
    tags = [t for t in TAG_QUERIES if any(t in c for c in carried)]
    if not tags:
        return {}
    queries = np.asarray(embed_texts([TAG_QUERIES[t] for t in tags]), dtype=np.float32)
    top = np.argsort(-(queries @ image_emb.T), axis=1, kind="stable")[:, :k]
    result = {}
    for tag, row in zip(tags, top, strict=True):
        positives = sum(tag in c for c in carried)
        result[f"tag_p10/{tag}"] = sum(tag in carried[i] for i in row) / min(k, positives)
    result["tag_p10"] = float(np.mean([result[f"tag_p10/{t}"] for t in tags]))
    return result
