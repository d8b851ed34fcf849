"""Training objectives as ``nn.Module``s with one call signature: ``loss(batch: LossBatch) -> Tensor``.

All features in a :class:`LossBatch` are L2-normalised. Entries with the same ``image_ids``
are the same image (several captions of it in a batch, or an image already in a queue) and
count as positives of each other everywhere.

* :class:`InfoNCE`: symmetric contrastive loss with the model's learnable temperature.
* :class:`BidirectionalDistributionMatching`: MIIA-style momentum keys, negative queues and a
  KL divergence between predicted and ground-truth matching distributions, both directions.
* :class:`TripletIntraClass`: CMPAGL-style hardest-negative triplet ranking plus an
  intra-class compactness term that uses class labels when known.
* :class:`CombinedLoss`: a weighted sum; returns the total and each part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LossBatch", "positives_cross_entropy", "InfoNCE", "BidirectionalDistributionMatching",
           "TripletIntraClass", "CombinedLoss"]


@dataclass
class LossBatch:
    """What every objective receives.

    image_features, text_features: [B, D] normalised, row i of each is a matching pair.
    logit_scale: scalar, exp of the learnable log inverse temperature (1/tau).
    image_ids: [B] identity of each pair's image. labels: [B] class index, -1 when unknown.
    momentum_image_features, momentum_text_features: [B, D] from the momentum encoders (no
    gradient), present when an objective has ``needs_momentum``.
    caption_positives: [B, B] or None: 1 where caption j is, word for word, also one of image i's own
    captions (datasets repeat captions across the images of a class); InfoNCE then counts it a positive.
    """

    image_features: Tensor
    text_features: Tensor
    logit_scale: Tensor
    image_ids: Tensor
    labels: Tensor | None = None
    momentum_image_features: Tensor | None = None
    momentum_text_features: Tensor | None = None
    caption_positives: Tensor | None = None


def _same(ids_a: Tensor, ids_b: Tensor) -> Tensor:
    return (ids_a[:, None] == ids_b[None, :]).float()


def positives_cross_entropy(logits: Tensor, positives: Tensor) -> Tensor:
    """Symmetric cross-entropy of ``logits`` [images, captions] against ``positives`` (1 for a match; a
    row may have several): each direction's targets are uniform over the positives of its own row."""
    i2t = -(positives / positives.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    t2i = -(positives.T / positives.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (i2t + t2i) / 2


class InfoNCE(nn.Module):
    """Symmetric InfoNCE (CLIP) with learnable temperature tau = 1 / logit_scale.

    With s_ij = logit_scale * <v_i, t_j>, positives P_ij = [img_i == img_j] (or caption j is also one of
    image i's captions, with ``caption_positives``), y = P normalised over each row and y' = P^T likewise:

        L = 1/2 * ( mean_i CE(softmax_j s_ij, y_i.) + mean_j CE(softmax_i s_ji^T, y'_j.) )

    which is the usual cross-entropy over the diagonal when each image occurs once.
    """

    needs_momentum = False

    def forward(self, batch: LossBatch) -> Tensor:
        logits = batch.logit_scale * batch.image_features @ batch.text_features.T
        positives = _same(batch.image_ids, batch.image_ids)
        if batch.caption_positives is not None:
            positives = torch.maximum(positives, batch.caption_positives.to(positives.dtype))
        return positives_cross_entropy(logits, positives)


class BidirectionalDistributionMatching(nn.Module):
    """Momentum keys + negative queues + distribution matching in both directions (the MIIA idea).

    Keys are the momentum encoders' features of the batch followed by a FIFO queue of earlier
    momentum features (``queue_size`` of each modality, with their image ids). For image i
    against every text key k (and symmetrically for text j against image keys):

        p_ik = softmax_k(logit_scale * <v_i, t'_k>)          predicted matching distribution
        q_ik = [img_i == img_k] / sum_k' [img_i == img_k']   ground truth (same image = positive)
        KL_i = sum_k p_ik * (log p_ik - log(q_ik + eps))

        L = 1/2 * (mean_i KL_i(image -> text keys) + mean_j KL_j(text -> image keys))

    KL(p || q) with eps-smoothed q (as in IRRA's similarity distribution matching) pushes all
    predicted mass onto the true matches. Without momentum features the online batch features
    serve as keys (queues then hold detached online features).
    """

    needs_momentum = True

    def __init__(self, embed_dim: int, queue_size: int = 1024, eps: float = 1e-8) -> None:
        super().__init__()
        self.queue_size = queue_size
        self.eps = eps
        self.register_buffer("image_queue", torch.zeros(queue_size, embed_dim))
        self.register_buffer("text_queue", torch.zeros(queue_size, embed_dim))
        self.register_buffer("id_queue", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def _kl(self, logits: Tensor, query_ids: Tensor, key_ids: Tensor) -> Tensor:
        match = _same(query_ids, key_ids)
        target = match / match.sum(dim=1, keepdim=True)
        log_p = F.log_softmax(logits, dim=1)
        return (log_p.exp() * (log_p - torch.log(target + self.eps))).sum(dim=1).mean()

    def forward(self, batch: LossBatch) -> Tensor:
        image_keys = batch.momentum_image_features
        text_keys = batch.momentum_text_features
        if image_keys is None or text_keys is None:
            image_keys, text_keys = batch.image_features, batch.text_features
        filled = self.id_queue >= 0
        all_text = torch.cat([text_keys, self.text_queue[filled].to(text_keys.dtype)])
        all_image = torch.cat([image_keys, self.image_queue[filled].to(image_keys.dtype)])
        key_ids = torch.cat([batch.image_ids, self.id_queue[filled]])
        i2t = self._kl(batch.logit_scale * batch.image_features @ all_text.T, batch.image_ids, key_ids)
        t2i = self._kl(batch.logit_scale * batch.text_features @ all_image.T, batch.image_ids, key_ids)
        if self.training:
            self._enqueue(image_keys.detach(), text_keys.detach(), batch.image_ids)
        return (i2t + t2i) / 2

    @torch.no_grad()
    def _enqueue(self, images: Tensor, texts: Tensor, ids: Tensor) -> None:
        count = min(len(ids), self.queue_size)
        slots = (self.pointer + torch.arange(count, device=ids.device)) % self.queue_size
        self.image_queue[slots] = images[:count].to(self.image_queue.dtype)
        self.text_queue[slots] = texts[:count].to(self.text_queue.dtype)
        self.id_queue[slots] = ids[:count]
        self.pointer.fill_(int((self.pointer + count) % self.queue_size))


class TripletIntraClass(nn.Module):
    """Hardest-negative triplet ranking (VSE++) plus intra-class compactness (the CMPAGL idea).

    With cosine similarities s_ij = <v_i, t_j>, margin m, and negatives N(i) = {j: img_j != img_i}:

        L_tri = mean_i [m - s_ii + max_{j in N(i)} s_ij]_+ + [m - s_ii + max_{j in N(i)} s_ji]_+

    Intra-class compactness pulls each image and text feature towards its class centre
    c_y = normalise(mean of all image and text features of class y in the batch), over the
    entries with a known label (y >= 0) whose class occurs at least twice in the batch:

        L_intra = mean_i (1 - <v_i, c_{y_i}>) / 2 + (1 - <t_i, c_{y_i}>) / 2

        L = L_tri + intra_weight * L_intra
    """

    needs_momentum = False

    def __init__(self, margin: float = 0.2, intra_weight: float = 0.1) -> None:
        super().__init__()
        self.margin = margin
        self.intra_weight = intra_weight

    def forward(self, batch: LossBatch) -> Tensor:
        v, t = batch.image_features, batch.text_features
        sim = v @ t.T
        positive = sim.diagonal()
        negatives = _same(batch.image_ids, batch.image_ids).bool()
        masked = sim.masked_fill(negatives, float("-inf"))
        hardest_text = masked.max(dim=1).values  # hardest caption for each image
        hardest_image = masked.max(dim=0).values  # hardest image for each caption
        has_negative = torch.isfinite(hardest_text)
        loss_i2t = (self.margin - positive + hardest_text).clamp(min=0)
        loss_t2i = (self.margin - positive + hardest_image).clamp(min=0)
        triplet = torch.where(has_negative, loss_i2t + loss_t2i, torch.zeros_like(positive)).mean()
        if batch.labels is None or self.intra_weight == 0:
            return triplet
        return triplet + self.intra_weight * self.intra_class(v, t, batch.labels)

    @staticmethod
    def intra_class(v: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        """L_intra above; zero when no known class occurs twice in the batch."""
        same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
        keep = same.sum(dim=1) >= 2
        if not keep.any():
            return v.sum() * 0.0
        weights = same[keep].float()  # [K, B]: rows = kept entries, columns = their classmates
        centres = F.normalize(weights @ (v + t), dim=-1)
        return ((1 - (v[keep] * centres).sum(-1)) / 2 + (1 - (t[keep] * centres).sum(-1)) / 2).mean()


class CombinedLoss(nn.Module):
    """Weighted sum of named objectives: returns (total, {name: unweighted value})."""

    def __init__(self, parts: dict[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("at least one objective needs a positive weight")
        self.weights = {name: float(weight) for name, (weight, _) in parts.items()}
        self.parts = nn.ModuleDict({name: module for name, (_, module) in parts.items()})

    @property
    def needs_momentum(self) -> bool:
        return any(getattr(m, "needs_momentum", False) for m in self.parts.values())

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, float]]:
        values = {name: module(batch) for name, module in self.parts.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, {name: float(value.detach()) for name, value in values.items()}
