"""Each objective on a hand-made case: the formula's value, and that matching pairs lower it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    BidirectionalDistributionMatching,
    CombinedLoss,
    InfoNCE,
    LossBatch,
    TripletIntraClass,
)

pytestmark = pytest.mark.training

E = torch.eye(2)  # two orthogonal unit vectors


def _batch(v, t, scale=1.0, ids=(0, 1), labels=None, **kw) -> LossBatch:
    return LossBatch(v, t, torch.tensor(scale), torch.tensor(ids),
                     None if labels is None else torch.tensor(labels), **kw)  # fmt: skip


def test_infonce_by_hand() -> None:
    # s = scale * I: each row's CE = log(1 + e^-scale); symmetric, same both ways.
    loss = InfoNCE()(_batch(E, E, scale=2.0))
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-6)
    swapped = InfoNCE()(_batch(E, E.flip(0), scale=2.0))
    assert float(swapped) == pytest.approx(math.log(1 + math.exp(2.0)), rel=1e-6)


def test_infonce_counts_same_image_entries_as_positives() -> None:
    # Two captions of one image: targets are uniform over both, so identical features give log 2.
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = InfoNCE()(_batch(v, v, ids=(7, 7)))
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-6)


def test_bdm_by_hand_without_queue() -> None:
    bdm = BidirectionalDistributionMatching(embed_dim=2, queue_size=4, eps=1e-8).eval()
    # p_i = softmax([s, 0]) on the right pair; q = one-hot; KL = p1*log p1 + p2*(log p2 - log eps)
    s = 3.0
    p1 = 1 / (1 + math.exp(-s))
    p2 = 1 - p1
    expected = p1 * math.log(p1) + p2 * (math.log(p2) - math.log(1e-8 + 0.0))
    assert float(bdm(_batch(E, E, scale=s))) == pytest.approx(expected, rel=1e-4)
    assert int((bdm.id_queue >= 0).sum()) == 0  # eval mode never enqueues


def test_bdm_queue_fills_and_same_image_in_queue_is_positive() -> None:
    bdm = BidirectionalDistributionMatching(embed_dim=2, queue_size=4).train()
    first = bdm(_batch(E, E, scale=5.0, momentum_image_features=E, momentum_text_features=E))
    assert bdm.id_queue.tolist()[:2] == [0, 1] and int(bdm.pointer) == 2
    # The same two images again: the queued copies are positives too, so the loss stays low,
    # while two *new* images with the same features see the queue as hard negatives.
    again = bdm(_batch(E, E, scale=5.0, momentum_image_features=E, momentum_text_features=E))
    bdm2 = BidirectionalDistributionMatching(embed_dim=2, queue_size=4).train()
    bdm2(_batch(E, E, scale=5.0, ids=(0, 1)))
    others = bdm2(_batch(E, E, scale=5.0, ids=(2, 3)))
    assert float(again) < float(others)
    assert float(first) < 0.5
    bdm(_batch(E, E, scale=5.0, ids=(4, 5)))
    assert int(bdm.pointer) == 2 and bdm.id_queue.tolist() == [4, 5, 0, 1]  # FIFO wraps around


def test_triplet_by_hand() -> None:
    v = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=1)
    t = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    # sim = [[1, 0], [.7071, .7071]]; margin 0.2:
    # i2t: row0 [0.2 - 1 + 0]+ = 0; row1 [0.2 - .7071 + .7071]+ = 0.2
    # t2i: col0 [0.2 - 1 + .7071]+ = 0; col1 [0.2 - .7071 + 0]+ = 0
    loss = TripletIntraClass(margin=0.2, intra_weight=0.0)(_batch(v, t))
    assert float(loss) == pytest.approx(0.2 / 2, rel=1e-5)


def test_intra_class_term_by_hand() -> None:
    # Class 0 twice: centre = normalise(v0 + t0 + v1 + t1) = normalise([2, 2]) = [.7071, .7071].
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, -1])
    value = TripletIntraClass.intra_class(v, t, labels)
    assert float(value) == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-5)
    compact = TripletIntraClass.intra_class(v[:1].repeat(2, 1), t[:1].repeat(2, 1), labels[:2])
    assert float(compact) == pytest.approx(0.0, abs=1e-6)
    assert float(TripletIntraClass.intra_class(v, t, torch.tensor([0, 1, 2]))) == 0.0


def test_combined_loss_weights_and_parts() -> None:
    combined = CombinedLoss({"infonce": (0.5, InfoNCE()), "triplet": (2.0, TripletIntraClass(0.2, 0.0))})
    total, parts = combined(_batch(E, E, scale=2.0))
    assert set(parts) == {"infonce", "triplet"}
    assert float(total) == pytest.approx(0.5 * parts["infonce"] + 2.0 * parts["triplet"], rel=1e-6)
    assert not combined.needs_momentum
    with pytest.raises(ValueError):
        CombinedLoss({})


@pytest.mark.parametrize(
    "loss", [InfoNCE(), BidirectionalDistributionMatching(8, 16), TripletIntraClass(0.2, 0.5)]
)
def test_gradient_descent_lowers_each_objective(loss) -> None:
    torch.manual_seed(0)
    v = torch.randn(6, 8, requires_grad=True)
    t = torch.randn(6, 8, requires_grad=True)
    optimizer = torch.optim.SGD([v, t], lr=0.5)
    ids, labels = torch.arange(6), torch.tensor([0, 0, 1, 1, 2, 2])
    values = []
    for _ in range(30):
        batch = LossBatch(F.normalize(v, dim=1), F.normalize(t, dim=1), torch.tensor(5.0), ids, labels)
        value = loss.eval()(batch)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(float(value.detach()))
    assert values[-1] < 0.5 * values[0]


def test_infonce_caption_positives_by_hand() -> None:
    # Caption 1 is word for word also one of image 0's captions: image 0 has two positives (captions 0 and 1),
    # caption 1 two (images 0 and 1); each direction's targets are uniform over the positives of its row.
    v, t = E, torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    positives = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    logits = 3.0 * v @ t.T
    i2t = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    t2i = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    expected = (-(i2t * F.log_softmax(logits, 1)).sum(1).mean() - (t2i * F.log_softmax(logits.T, 1)).sum(1).mean()) / 2
    loss = InfoNCE()(_batch(v, t, scale=3.0, caption_positives=positives))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    plain = InfoNCE()(_batch(v, t, scale=3.0))
    assert float(loss) != pytest.approx(float(plain), rel=1e-3)  # the repeated caption is no longer a negative
    assert float(InfoNCE()(_batch(v, t, scale=3.0, caption_positives=torch.eye(2)))) == pytest.approx(float(plain))
