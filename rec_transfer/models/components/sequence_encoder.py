"""Causal transformer over a user's item sequence (SASRec-style, learned positions)."""

from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    """Maps item embeddings (B, L, D) to one state per position, each seeing only its past.

    Inputs are right-padded, so with the causal mask no real position attends to padding.
    """

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        max_len: int = 50,
        inner: int | None = None,
    ):
        super().__init__()
        self.max_len, self.heads = max_len, heads
        self.positions = nn.Embedding(max_len, hidden)
        self._init_positions()  # here, before the layers draw theirs: the same seed gives the same model as ever
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, inner or 4 * hidden, dropout, activation="gelu", batch_first=True
        )
        # SASRec's feed-forward block (RecBole, UniSRec) has no dropout between its two layers, only on
        # the block's output (``dropout2``) and on the attention weights; PyTorch adds one inside.
        layer.dropout = nn.Identity()
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self._init_projections()

    def reset_parameters(self) -> None:
        """SASRec's initialisation, as built (LayerNorms keep their own: ones, zeros)."""
        self._init_positions()
        self._init_projections()

    def _init_positions(self) -> None:
        # Same scale as item embeddings: the default N(0, 1) would drown the items after LayerNorm.
        nn.init.normal_(self.positions.weight, std=0.02)

    def _init_projections(self) -> None:
        # SASRec/UniSRec (RecBole) initialise every projection as N(0, 0.02) with zero biases;
        # PyTorch's defaults (Xavier / Kaiming uniform) give larger weights, with which the ID-only
        # model trained below the published SASRec.
        for module in self.layers.modules():
            if isinstance(module, nn.Linear | nn.MultiheadAttention):
                for name, param in module.named_parameters(recurse=False):
                    (nn.init.normal_(param, std=0.02) if "weight" in name else nn.init.zeros_(param))

    def forward(
        self, items: torch.Tensor, positions: torch.Tensor | None = None, segments: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, D) → (B, L, D). For packed rows (several histories per row) pass each token's
        ``positions`` in its own history and its history's id in ``segments`` (both (B, L)): a
        token then attends only to earlier tokens of the same history."""
        length = items.shape[1]
        if length > self.max_len and positions is None:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        if positions is None:
            x = items + self.positions.weight[:length]  # (B, L, D)
        else:
            if int(positions.max()) >= self.max_len:
                raise ValueError(f"a history is longer than max_len {self.max_len}")
            x = items + self.positions(positions)
        x = self.dropout(self.norm(x))
        if segments is None:
            mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
            return self.layers(x, mask=mask, is_causal=True)  # (B, L, D)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = (segments[:, :, None] == segments[:, None, :]) & causal  # (B, L, L)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, float("-inf"))
        return self.layers(x, mask=mask.repeat_interleave(self.heads, dim=0), is_causal=False)  # (B, L, D)
