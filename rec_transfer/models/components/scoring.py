"""Scoring sequence states against item vectors, and the next-item loss over a whole catalogue."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Similarity = Literal["dot", "cosine"]


class ItemScorer(nn.Module):
    """Similarity / temperature between states and items, in float32; no parameters.

    Args:
        similarity: ``dot`` product, or ``cosine`` of normalised vectors.
        temperature: logits are divided by it.
    """

    def __init__(self, similarity: Similarity = "cosine", temperature: float = 0.07):
        super().__init__()
        self.similarity, self.temperature = similarity, temperature

    def logits(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(T, D) states against (M, D) item vectors → (T, M) float32 similarities / temperature."""
        # Always float32, also under bf16/fp16 autocast: short mantissas (8 bits in bf16) round nearby scores into ties,
        # which the pessimistic ranking counts against the target, and top-K order would be arbitrary among them.
        with torch.autocast(states.device.type, enabled=False):
            states, items = states.float(), items.float()
            if self.similarity == "cosine":
                states, items = F.normalize(states, dim=-1), F.normalize(items, dim=-1)
            # The temperature scales the T states, not the T × M logits: same result, far less work.
            return (states / self.temperature) @ items.T

    def forward(self, states: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(T, D) states against an (N + 1, D) item table → (T, N + 1) float32 logits; the padding column is -inf."""
        logits = self.logits(states, table)
        logits[:, 0] = float("-inf")
        return logits

    def loss(self, states: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of (R, L, D) states against every item of ``table``, at the positions where ``targets``
        (R, L) names an item (0 = padding, no loss)."""
        mask = targets > 0  # (R, L)
        # Against items 1..N only: the padding row is never a target, and leaving it out spares a
        # -inf column written into (and copied back out of) the (T, N) logits' gradient.
        logits = self.logits(states[mask], table[1:])  # (T, N)
        return F.cross_entropy(logits, targets[mask] - 1)
