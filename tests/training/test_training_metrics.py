"""Retrieval metrics on hand-computed cases, and rank-fusion re-ranking."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import METRIC_KEYS, ranks_of_best, rerank_scores, retrieval_metrics

pytestmark = pytest.mark.training


def test_ranks_of_best_orders_like_the_reference_code() -> None:
    scores = np.array([[0.9, 0.5, 0.7], [0.1, 0.2, 0.3]])
    positives = np.array([[False, True, True], [True, False, False]])
    # row 0: best positive 0.7, one item above; row 1: 0.1, two above
    assert ranks_of_best(scores, positives).tolist() == [1, 2]


def test_published_protocol_by_hand() -> None:
    # 3 images with 2 captions each (caption j belongs to image j // 2).
    caption_image = np.array([0, 0, 1, 1, 2, 2])
    sim = np.array(
        [
            # c0   c1   c2   c3   c4   c5
            [0.9, 0.1, 0.8, 0.0, 0.0, 0.0],  # image 0: own caption c0 first -> i2t rank 0
            [0.7, 0.6, 0.2, 0.1, 0.5, 0.0],  # image 1: best own c2 (0.2), 4 above -> rank 4
            [0.3, 0.2, 0.1, 0.9, 0.8, 0.0],  # image 2: best own c4 (0.8), c3 above -> rank 1
        ]
    )
    m = retrieval_metrics(sim, caption_image)
    assert list(m) == list(METRIC_KEYS)
    # i2t ranks [0, 4, 1]: R@1 = 1/3, R@5 = R@10 = 3/3
    assert m["i2t_r1"] == pytest.approx(100 / 3)
    assert m["i2t_r5"] == m["i2t_r10"] == 100.0
    # t2i, per caption (column): c0 -> img0 0.9 top (0); c1 -> img0 0.1 below 0.6, 0.2 (2);
    # c2 -> img1 0.2 below 0.8 (1); c3 -> img1 0.1 below 0.9 (1); c4 -> img2 0.8 top (0);
    # c5 -> all 0.0: argsort()[::-1] puts the last image first, its own (0).  ranks [0, 2, 1, 1, 0, 0]
    assert m["t2i_r1"] == pytest.approx(300 / 6)
    assert m["t2i_r5"] == m["t2i_r10"] == 100.0
    assert m["mR"] == pytest.approx((100 / 3 + 200 + 50 + 200) / 6)
    assert (m["n_images"], m["n_captions"]) == (3, 6)


def test_exact_ties_are_broken_as_the_reference_code_does() -> None:
    # An identical caption of another image ties with the true one: np.argsort(row)[::-1]
    # ranks the later index first, so image 0 misses R@1 while image 1 hits it.
    sim = np.array([[0.5, 0.5], [0.5, 0.5]])
    m = retrieval_metrics(sim, np.array([0, 1]))
    assert m["i2t_r1"] == 50.0 and m["t2i_r1"] == 50.0
    for row in sim:
        assert np.argsort(row)[::-1][0] == 1


def test_duplicates_are_kept_in_text_to_image() -> None:
    # Two identical captions of image 1: both count, and both fail R@1.
    caption_image = np.array([0, 1, 1])
    sim = np.array([[1.0, 0.5, 0.5], [0.0, 0.4, 0.4]])
    m = retrieval_metrics(sim, caption_image)
    assert m["t2i_r1"] == pytest.approx(100 / 3)
    assert m["i2t_r1"] == 100.0  # image 1's own captions (0.4) beat caption 0 (0.0)


def test_rerank_promotes_mutual_matches() -> None:
    # Image 0 prefers caption 1 (forward ranks c1: 0, c0: 1) but caption 1 ranks image 0 last
    # (backward rank 2) while caption 0 ranks image 0 first (0): fused 1 + 0 < 0 + 2, so c0 wins.
    sim = np.array([[0.50, 0.52, 0.0], [0.10, 0.90, 0.0], [0.0, 0.80, 0.90]])
    caption_image = np.arange(3)
    i2t, t2i = rerank_scores(sim, top_k=3)
    assert np.argmax(i2t, axis=1).tolist() == [0, 1, 2]
    assert t2i.shape == (3, 3) and np.argmax(t2i[1]) == 1
    assert retrieval_metrics(sim, caption_image)["i2t_r1"] == pytest.approx(200 / 3)
    assert retrieval_metrics(i2t, caption_image, t2i)["i2t_r1"] == 100.0


def test_rerank_keeps_order_outside_top_k() -> None:
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((5, 12))
    i2t, _ = rerank_scores(sim, top_k=3)
    for row_sim, row_new in zip(sim, i2t, strict=True):
        tail_old = np.argsort(-row_sim)[3:]
        assert np.argsort(-row_new)[3:].tolist() == tail_old.tolist()
        assert set(np.argsort(-row_new)[:3]) == set(np.argsort(-row_sim)[:3])
