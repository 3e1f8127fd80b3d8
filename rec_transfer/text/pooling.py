"""Reduce per-token hidden states to one vector per text."""

from __future__ import annotations

from typing import Literal, get_args

import torch

PoolingMethod = Literal["mean", "cls", "last"]
POOLING_METHODS: tuple[str, ...] = get_args(PoolingMethod)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: PoolingMethod) -> torch.Tensor:
    """Pool token states into one float32 vector per sequence, ignoring padding.

    Args:
        hidden: Token states, shape (B, L, D).
        attention_mask: 1 for real tokens, 0 for padding, shape (B, L). Padding may sit on either side.
        method: ``"mean"`` over real tokens, ``"cls"`` = first real token, ``"last"`` = last real token.

    Returns:
        Pooled vectors, shape (B, D), float32.
    """
    if method not in POOLING_METHODS:
        raise ValueError(f"Unknown pooling {method!r}; expected one of {POOLING_METHODS}")
    mask = attention_mask.to(torch.bool)  # (B, L)
    batch = torch.arange(hidden.shape[0], device=hidden.device)
    if method == "mean":
        weights = mask.unsqueeze(-1).to(torch.float32)  # (B, L, 1)
        # Summing in float32 keeps bf16/fp16 autocast outputs from losing precision over long sequences.
        summed = (hidden.to(torch.float32) * weights).sum(dim=1)  # (B, D)
        return summed / weights.sum(dim=1).clamp_min(1.0)
    if method == "cls":
        # argmax returns the first maximum: the first real token, wherever the padding is.
        first = mask.to(torch.int8).argmax(dim=1)  # (B,)
        return hidden[batch, first].to(torch.float32)
    length = mask.shape[1]
    last = length - 1 - mask.flip(dims=[1]).to(torch.int8).argmax(dim=1)  # (B,)
    return hidden[batch, last].to(torch.float32)
