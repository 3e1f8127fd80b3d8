"""Scoring sequence states against item vectors, and the next-item losses over a catalogue."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rec_transfer.models.components.losses import chunked_cross_entropy, sampled_softmax

Similarity = Literal["dot", "cosine"]


class ItemScorer(nn.Module):
    """Similarity / temperature between states and items, in float32; no parameters.

    Always float32, also under bf16/fp16 autocast: short mantissas (8 bits in bf16) round nearby scores into
    ties, which the pessimistic ranking counts against the target, and top-K order would be arbitrary among them.

    Args:
        similarity: ``dot`` product, or ``cosine`` of normalised vectors.
        temperature: logits are divided by it.
    """

    def __init__(self, similarity: Similarity = "cosine", temperature: float = 0.07):
        super().__init__()
        self.similarity, self.temperature = similarity, temperature

    def queries(self, states: torch.Tensor) -> torch.Tensor:
        """States as the logits read them: float32, normalised for cosine, divided by the temperature (the T
        states rather than the T × M logits: the same result for far less work)."""
        states = states.float()
        return (F.normalize(states, dim=-1) if self.similarity == "cosine" else states) / self.temperature

    def keys(self, items: torch.Tensor) -> torch.Tensor:
        """Item vectors as the logits read them: float32, normalised for cosine."""
        items = items.float()
        return F.normalize(items, dim=-1) if self.similarity == "cosine" else items

    def logits(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(T, D) states against (M, D) item vectors → (T, M) float32 similarities / temperature."""
        with torch.autocast(states.device.type, enabled=False):
            return self.queries(states) @ self.keys(items).T

    def forward(self, states: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(T, D) states against an (N + 1, D) item table → (T, N + 1) float32 logits; the padding column is -inf."""
        logits = self.logits(states, table)
        logits[:, 0] = float("-inf")
        return logits

    def loss(
        self, states: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, chunk: int | None = None
    ) -> torch.Tensor:
        """Cross-entropy of (R, L, D) states against every item of ``table``, at the positions where ``targets``
        (R, L) names an item (0 = padding, no loss); in blocks of ``chunk`` items if given (same value)."""
        mask = targets > 0  # (R, L)
        # Against items 1..N only: the padding row is never a target, and leaving it out spares a
        # -inf column written into (and copied back out of) the (T, N) logits' gradient.
        if chunk is None:
            return F.cross_entropy(self.logits(states[mask], table[1:]), targets[mask] - 1)
        with torch.autocast(states.device.type, enabled=False):
            return chunked_cross_entropy(self.queries(states[mask]), self.keys(table[1:]), targets[mask] - 1, chunk)

    def sampled_loss(
        self, states: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor, log_q: torch.Tensor
    ) -> torch.Tensor:
        """Sampled softmax of (T, D) states over (C, D) candidate vectors (see ``losses.sample_candidates``)."""
        with torch.autocast(states.device.type, enabled=False):
            return sampled_softmax(self.queries(states), self.keys(candidates), labels, log_q)
