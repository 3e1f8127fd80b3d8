"""Text-vector adaptor: parametric whitening experts mixed by a gate (as in UniSRec)."""

from __future__ import annotations

import torch
from torch import nn


class ParametricWhitening(nn.Module):
    """``(x - b) W``: a learned centring and projection, applied to frozen text vectors."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(in_dim))
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bias)
        nn.init.normal_(self.proj.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(x) - self.bias)


class MoEAdaptor(nn.Module):
    """Mixture of whitening experts; the gate reads the text vector itself.

    Several experts let text from different domains find different projections into one shared
    item space; the gate chooses per item.
    """

    def __init__(self, in_dim: int, out_dim: int, experts: int = 8, dropout: float = 0.2):
        super().__init__()
        self.experts = nn.ModuleList(ParametricWhitening(in_dim, out_dim, dropout) for _ in range(experts))
        self.gate = nn.Linear(in_dim, experts, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The gate starts even over the experts (each expert initialises itself)."""
        nn.init.zeros_(self.gate.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.softmax(self.gate(x), dim=-1)  # (..., E)
        # Summed expert by expert, never stacked as (..., E, D): over a catalogue of 1M items at width 300 that stack
        # alone would be 9.6 GB (the evaluation's item table is built this way).
        out = gates[..., 0:1] * self.experts[0](x)  # (..., D)
        for i, expert in enumerate(self.experts[1:], start=1):
            out = out + gates[..., i : i + 1] * expert(x)
        return out
