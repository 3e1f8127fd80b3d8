"""Item representations: adapted text vectors, optionally plus ID embeddings, or ID embeddings alone."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from rec_transfer.models.components.adaptor import MoEAdaptor

ItemMode = Literal["text", "text+id", "id"]


class ItemTower(nn.Module):
    """One item table per domain, sharing one text adaptor across domains.

    Text vectors are buffers that are not saved in checkpoints: they are rebuilt from the text
    cache, so a checkpoint stays small and never carries stale vectors.
    """

    def __init__(
        self,
        hidden: int,
        mode: ItemMode = "text",
        text_dim: int | None = None,
        experts: int = 8,
        adaptor_dropout: float = 0.2,
    ):
        super().__init__()
        self.mode, self.hidden, self.text_dim = mode, hidden, text_dim
        if mode != "id":
            if text_dim is None:
                raise ValueError(f"item mode {mode!r} needs text vectors: set the data module's text_encoder")
            self.adaptor = MoEAdaptor(text_dim, hidden, experts, adaptor_dropout)
        self.id_embeddings = nn.ModuleDict()
        self.num_items: dict[str, int] = {}

    def has_domain(self, name: str) -> bool:
        return name in self.num_items

    def add_domain(self, name: str, num_items: int, text_vectors: torch.Tensor | None = None) -> None:
        """Registers a domain; ``text_vectors`` is (num_items + 1, text_dim) with row 0 for padding."""
        if self.mode != "id":
            if text_vectors is None or text_vectors.shape[0] != num_items + 1:
                raise ValueError(f"domain {name!r}: expected text vectors of shape ({num_items + 1}, D)")
            if text_vectors.shape[1] != self.text_dim:
                known = ", ".join(self.num_items) or "none yet"
                raise ValueError(
                    f"domain {name!r} has text vectors of width {text_vectors.shape[1]}, but the shared adaptor "
                    f"reads width {self.text_dim} (domains: {known}); every domain needs the same text model"
                )
            self.register_buffer(f"text_{name}", text_vectors, persistent=False)
        if self.mode != "text" and name not in self.id_embeddings:
            emb = nn.Embedding(num_items + 1, self.hidden, padding_idx=0)
            if self.mode == "text+id":
                nn.init.zeros_(emb.weight)  # starts as the text prior; IDs learn a residual
            else:
                nn.init.normal_(emb.weight, std=0.02)
                with torch.no_grad():
                    emb.weight[0].zero_()
            self.id_embeddings[name] = emb
        self.num_items[name] = num_items

    def forward(self, domain: str) -> torch.Tensor:
        """The whole item table of ``domain``: (num_items + 1, hidden), row 0 all zeros."""
        parts = []
        if self.mode != "id":
            parts.append(self.adaptor(getattr(self, f"text_{domain}")[1:]))  # (N, D)
        if self.mode != "text":
            parts.append(self.id_embeddings[domain].weight[1:])  # (N, D)
        table = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        return torch.cat([table.new_zeros(1, self.hidden), table])
