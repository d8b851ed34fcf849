"""Image-text retrieval metrics exactly as published for RSICD/UCM/RSITMD, and rank-fusion re-ranking.

Protocol (Karpathy splits, 5 captions per image, numpy only):

* image -> text R@K: the share of images with *any* of their own captions among the K
  captions ranked highest for that image;
* text -> image R@K: over all captions, duplicates kept, the share whose own image is among
  the K images ranked highest for that caption;
* R@1, R@5, R@10 in both directions and mR, their mean; all in percent.

Ranks follow the reference implementation (the ``i2t``/``t2i`` functions shipped with the
AMFMN/GaLR code): ``inds = np.argsort(scores)[::-1]`` and the position of the ground truth in
``inds``. This matters on UCM, whose duplicate captions make exact ties: they are never broken
in favour of the true match. One change from that code: its ``argsort`` is numpy's default
quicksort, which is not stable, so the order of tied items depended on every *other* score in the
row (a 5e-7 change in image embeddings, ONNX Runtime against torch, moved mR by 0.48). Here the
sort is stable and reversed: tied items rank by position, the last first, whatever the rest of
the row holds. Together with embedding each distinct caption once, evaluation is deterministic.

:func:`rerank_scores` is a numpy function (engine-friendly) that fuses forward and backward
ranks, the idea behind CMPAGL's similarity-matrix reweighting and GaLR's multivariate re-rank.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RECALL_KS", "METRIC_KEYS", "ranks_of_best", "retrieval_metrics", "rerank_scores", "evaluate_scores"]

RECALL_KS = (1, 5, 10)
METRIC_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mR", "n_images", "n_captions")


def ranks_of_best(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """For each row of ``scores`` [Q, N], the 0-based rank of its best-ranked positive item.

    positives: bool [Q, N]; every row needs at least one positive. Items are ordered as the
    reference code orders them, ``np.argsort(row)[::-1]``, with a stable sort: exact ties
    (identical captions of different images are common in UCM) rank by position, the last first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not positives.any(axis=1).all():
        raise ValueError("every query needs at least one positive item")
    order = np.argsort(scores, axis=1, kind="stable")[:, ::-1]
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(scores.shape[1])[None, :], axis=1)
    return np.where(positives, position, scores.shape[1]).min(axis=1)


def _recalls(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    return {f"{prefix}_r{k}": float(100.0 * np.mean(ranks < k)) for k in RECALL_KS}


def retrieval_metrics(
    i2t_scores: np.ndarray, caption_image: np.ndarray, t2i_scores: np.ndarray | None = None
) -> dict[str, float]:
    """R@1/5/10 both ways and mR (percent) from scores.

    i2t_scores: [n_images, n_captions], higher is better (cosine similarities, or re-ranked).
    caption_image: [n_captions] index of each caption's image.
    t2i_scores: [n_captions, n_images]; default ``i2t_scores.T``.
    """
    i2t_scores = np.asarray(i2t_scores)
    caption_image = np.asarray(caption_image)
    n_images, n_captions = i2t_scores.shape
    if caption_image.shape != (n_captions,):
        raise ValueError(f"caption_image has shape {caption_image.shape}, expected ({n_captions},)")
    t2i_scores = i2t_scores.T if t2i_scores is None else np.asarray(t2i_scores)
    owns = caption_image[None, :] == np.arange(n_images)[:, None]  # [n_images, n_captions]
    metrics = _recalls(ranks_of_best(i2t_scores, owns), "i2t")
    metrics.update(_recalls(ranks_of_best(t2i_scores, owns.T), "t2i"))
    metrics["mR"] = float(np.mean([metrics[k] for k in METRIC_KEYS[:6]]))
    metrics["n_images"] = int(n_images)
    metrics["n_captions"] = int(n_captions)
    return {k: metrics[k] for k in METRIC_KEYS}


def _rank_matrix(scores: np.ndarray) -> np.ndarray:
    """0-based rank of each column within its row, ordered as :func:`ranks_of_best` orders them."""
    order = np.argsort(scores, axis=1, kind="stable")[:, ::-1]
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks


def rerank_scores(sim: np.ndarray, top_k: int = 10, backward_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Rank-fusion re-ranking of a similarity matrix ``sim`` [n_images, n_captions].

    For image i and one of its ``top_k`` captions j, the forward rank f(i, j) is j's rank in
    i's list and the backward rank b(j, i) is i's rank in j's list (all images for caption j).
    A true pair tends to rank high both ways, so the top_k candidates are re-ordered by

        score'(i, j) = -(f(i, j) + backward_weight * b(j, i))   (ties: original similarity)

    and stay above every candidate outside the top_k (whose order is unchanged). The
    text -> image direction is the same with the roles of images and captions swapped.
    Returns (i2t_scores [n_images, n_captions], t2i_scores [n_captions, n_images]).
    """
    sim = np.asarray(sim, dtype=np.float64)
    rank_i2t = _rank_matrix(sim)  # [I, C]: caption j's rank for image i
    rank_t2i = _rank_matrix(sim.T)  # [C, I]: image i's rank for caption j
    return (
        _fuse(sim, rank_i2t, rank_t2i.T, top_k, backward_weight),
        _fuse(sim.T, rank_t2i, rank_i2t.T, top_k, backward_weight),
    )


def _fuse(sim: np.ndarray, forward: np.ndarray, backward: np.ndarray, top_k: int, weight: float) -> np.ndarray:
    # sim is in [-1, 1] for cosine similarities: scaled to (-0.5, 0.5) it only breaks ties.
    span = max(float(np.abs(sim).max()), 1e-12)
    tie_break = 0.5 * sim / span * 0.999
    fused = -(forward + weight * backward) + tie_break
    floor = fused[forward < top_k].min() if (forward < top_k).any() else 0.0
    # Outside the top_k: keep the original order, below every re-ranked candidate.
    outside = floor - 1.0 - (forward - top_k)
    return np.where(forward < top_k, fused, outside)


def evaluate_scores(
    sim: np.ndarray, caption_image: np.ndarray, rerank: bool = False, top_k: int = 10, backward_weight: float = 1.0
) -> dict[str, float]:
    """Metrics for a similarity matrix, optionally after :func:`rerank_scores`."""
    if not rerank:
        return retrieval_metrics(sim, caption_image)
    i2t, t2i = rerank_scores(sim, top_k=top_k, backward_weight=backward_weight)
    return retrieval_metrics(i2t, caption_image, t2i)
