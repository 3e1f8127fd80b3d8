"""A sequence-to-sequence contrastive loss (UniSRec's pre-training; CL4SRec): two views of each history,
one with some items masked, should be nearer each other than any other history of the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rec_transfer.models.components.history import history_ends


def mask_items(inputs: torch.Tensor, rate: float) -> torch.Tensor:
    """``inputs`` (R, L) with each real item replaced by 0 (the padding item, a zero vector) with probability
    ``rate``; padding stays padding. Draws from the global generator (reseeded per epoch: exact resume)."""
    drop = torch.rand(inputs.shape, device=inputs.device) < rate
    return inputs.masked_fill(drop, 0)


def sequence_contrast(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between (B, D) views ``a`` and ``b`` of the same B histories: row i of each is the other's
    positive, the batch's other histories its negatives; cosine similarity over ``temperature``."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # (B, B)
    labels = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def history_contrast(encoder: nn.Module, item_tower: nn.Module, batch: dict, mask: float, temperature: float):
    """A training batch's contrastive loss: each history unmasked against itself with a share ``mask`` of its items
    masked, in one ``encoder`` pass each (dropout on in both), over ``item_tower``'s vectors of the batch's items."""
    ends = history_ends(batch["input"], batch.get("segments"))  # (B,)
    needed = torch.unique(torch.cat([batch["input"].new_zeros(1), batch["input"].flatten()]))  # (M,) sorted
    vectors = item_tower(batch["domain"], needed)  # (M, D)
    views = []
    for rate in (0.0, mask):
        inputs = vectors[torch.searchsorted(needed, mask_items(batch["input"], rate))]  # (R, L, D)
        views.append(encoder(inputs, batch.get("positions"), batch.get("segments")).flatten(0, 1)[ends])
    return sequence_contrast(*views, temperature)
