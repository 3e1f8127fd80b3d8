"""The items each position has already seen, and a learned logit offset for them (how often users return to an item)."""

from __future__ import annotations

import torch
from torch import nn


def token_histories(inputs: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
    """(R, L, L) the items each token's history holds so far: entry ``[r, t, j]`` is ``inputs[r, j]`` where ``j <= t``
    and token ``j`` belongs to the same history as token ``t`` (``segments``, for packed rows), else 0 (no item).

    Args:
        inputs: (R, L) item ids, 0 = padding.
        segments: (R, L) which history each token belongs to (packed rows); ``None``: one history per row.
    """
    length = inputs.shape[1]
    seen = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()[None]  # (1, L, L): j <= t
    if segments is not None:
        seen = seen & (segments[:, :, None] == segments[:, None, :])  # (R, L, L)
    return torch.where(seen, inputs[:, None, :], torch.zeros((), dtype=inputs.dtype, device=inputs.device))


def history_ends(inputs: torch.Tensor, segments: torch.Tensor | None) -> torch.Tensor:
    """(B,) flat index into R × L of each history's last token, in the order of the batch's users: of each segment
    (packed rows, ``segments`` > 0), or of each row's last real item (right-padded rows, ``segments`` None)."""
    if segments is None:
        last = (inputs > 0).sum(dim=1).clamp(min=1) - 1  # (R,)
        return torch.arange(len(inputs), device=inputs.device) * inputs.shape[1] + last
    flat = segments.flatten()
    following = torch.cat([flat[1:], flat.new_zeros(1)])  # a segment never spans two rows: ids are unique per batch
    ends = torch.nonzero((flat > 0) & (flat != following)).flatten()
    return ends[flat[ends].argsort()]  # in the order of the batch's users (segment i + 1: user i)


def last_histories(inputs: torch.Tensor, segments: torch.Tensor | None, last: torch.Tensor | None) -> torch.Tensor:
    """(B, L) each evaluated user's history: the items up to its last input token (``last``, flat index into R × L,
    for packed rows; ``None``: ``history_ends``)."""
    length = inputs.shape[1]
    last = history_ends(inputs, segments) if last is None else last
    row, end = last // length, last % length  # (B,) each user's row and last position
    seen = torch.arange(length, device=inputs.device)[None] <= end[:, None]  # (B, L): positions up to the last
    if segments is not None:
        seen = seen & (segments[row] == segments[row, end][:, None])  # and of the user's own history
    return torch.where(seen, inputs[row], torch.zeros((), dtype=inputs.dtype, device=inputs.device))


def in_history(histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(T, C) bool: whether each of ``items`` (C,) sorted ids is among each row's ``histories`` (T, H).

    Ids absent from ``items`` (padding included) match nothing. Memory is T × C, the size of the logits it offsets.
    """
    if len(items) == 0:
        return torch.zeros(len(histories), 0, dtype=torch.bool, device=histories.device)
    pos = torch.searchsorted(items, histories).clamp(max=len(items) - 1)  # (T, H)
    found = (items[pos] == histories).to(torch.float32)
    hits = torch.zeros(len(histories), len(items), device=histories.device).scatter_add_(1, pos, found)
    return hits > 0


class HistoryBias(nn.Module):
    """One learned logit offset for items already in the user's history (before the next item).

    A text model scores an item close to the ones just bought, the user's own items first; on Amazon data a user
    rarely buys the same item again, so those slots of a top-K are wasted. This offset, trained by the next-item loss
    like every other weight, learns how often the domain's users do return (negative: rarely; positive: often).
    It is a model weight, not a filter: evaluation still ranks every item (the published protocol).

    Args:
        temperature: the scorer's.
        init: the starting offset in similarity units (0: none; the loss finds the domain's own, either way).
        scale: the weight is kept in units of ``scale`` similarities (logit = weight · scale / temperature). Adam moves
            a weight by about its learning rate a step whatever the gradient, so at 1e-3 the offset moves by about
            0.14 logits a step: a few hundred steps find an offset of either sign (a plain logit would move 1e-3).
    """

    def __init__(self, temperature: float, init: float = 0.0, scale: float = 10.0):
        super().__init__()
        self.temperature, self.scale, self.init = temperature, scale, float(init)
        self.weight = nn.Parameter(torch.tensor(self.init / scale))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(self.init / self.scale)

    @property
    def logit(self) -> torch.Tensor:
        """The offset added to a history item's logit."""
        return self.weight * self.scale / self.temperature

    def forward(self, histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(T, C) what to add to the logits of ``items`` (C,) sorted ids for rows with ``histories`` (T, H)."""
        return self.logit * in_history(histories, items)
