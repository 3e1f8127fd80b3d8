"""Scoring sequence states against item vectors, and the next-item losses over a catalogue."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rec_transfer.models.components.history import HistoryBias
from rec_transfer.models.components.losses import chunked_cross_entropy, sampled_softmax

Similarity = Literal["dot", "cosine"]


class ItemScorer(nn.Module):
    """Similarity / temperature between states and items, in float32; with ``history_bias``, plus one learned offset
    for items already in the history (``HistoryBias``, its only parameter).

    Always float32, also under bf16/fp16 autocast: short mantissas (8 bits in bf16) round nearby scores into
    ties, which the pessimistic ranking counts against the target, and top-K order would be arbitrary among them.

    Args:
        similarity: ``dot`` product, or ``cosine`` of normalised vectors.
        temperature: logits are divided by it.
        history_bias: learn the offset of history items (the losses then need each row's ``histories``).
    """

    def __init__(self, similarity: Similarity = "cosine", temperature: float = 0.07, history_bias: bool = False):
        super().__init__()
        self.similarity, self.temperature = similarity, temperature
        self.history_bias = HistoryBias(temperature) if history_bias else None

    def history_offset(self) -> torch.Tensor | None:
        """The logit offset of a history item (``None`` without ``history_bias``)."""
        return None if self.history_bias is None else self.history_bias.logit

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

    def forward(self, states: torch.Tensor, table: torch.Tensor, histories: torch.Tensor | None = None) -> torch.Tensor:
        """(T, D) states against an (N + 1, D) item table → (T, N + 1) float32 logits; the padding column is -inf.
        ``histories`` (T, H): each row's history items, for ``history_bias``."""
        logits = self.logits(states, table)
        if self.history_bias is not None:
            logits = logits + self.history_bias(histories, torch.arange(len(table), device=logits.device))
        logits[:, 0] = float("-inf")
        return logits

    def loss(
        self,
        states: torch.Tensor,
        targets: torch.Tensor,
        table: torch.Tensor,
        chunk: int | None = None,
        histories: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of (R, L, D) states against every item of ``table``, at the positions where ``targets``
        (R, L) names an item (0 = padding, no loss); in blocks of ``chunk`` items if given (same value).
        ``histories`` (R, L, H): the items each position has seen (``history.token_histories``), for
        ``history_bias``."""
        mask = targets > 0  # (R, L)
        # Against items 1..N only: the padding row is never a target, and leaving it out spares a
        # -inf column written into (and copied back out of) the (T, N) logits' gradient. Indices shift by one.
        seen = None if self.history_bias is None else histories[mask] - 1  # (T, H); padding becomes -1: no item
        if chunk is None:
            logits = self.logits(states[mask], table[1:])
            if seen is not None:
                logits = logits + self.history_bias(seen, torch.arange(len(table) - 1, device=logits.device))
            return F.cross_entropy(logits, targets[mask] - 1)
        with torch.autocast(states.device.type, enabled=False):
            queries, keys = self.queries(states[mask]), self.keys(table[1:])
            return chunked_cross_entropy(queries, keys, targets[mask] - 1, chunk, seen, self.history_offset())

    def sampled_loss(
        self,
        states: torch.Tensor,
        candidates: torch.Tensor,
        labels: torch.Tensor,
        log_q: torch.Tensor,
        candidate_ids: torch.Tensor | None = None,
        histories: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sampled softmax of (T, D) states over (C, D) candidate vectors (see ``losses.sample_candidates``);
        ``candidate_ids`` (C,) sorted and ``histories`` (T, H) for ``history_bias``."""
        offsets = None if self.history_bias is None else self.history_bias(histories, candidate_ids)  # (T, C)
        with torch.autocast(states.device.type, enabled=False):
            return sampled_softmax(self.queries(states), self.keys(candidates), labels, log_q, offsets)
