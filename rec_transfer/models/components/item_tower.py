"""Item representations: adapted text vectors, optionally plus ID embeddings, or ID embeddings alone."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from rec_transfer.models.components.adaptor import MoEAdaptor
from rec_transfer.models.components.item_text import FrozenItemText, TrainableItemText

ItemMode = Literal["text", "text+id", "id"]


class ItemTower(nn.Module):
    """One item table per domain, sharing one text source and one text adaptor across domains.

    Args:
        hidden: width of item vectors.
        mode: ``text``, ``text+id`` or ``id``.
        text: where text vectors come from (``FrozenItemText`` or ``TrainableItemText``); None for ``id``.
        experts: whitening experts in the adaptor.
        adaptor_dropout: dropout on text vectors inside the adaptor.
    """

    def __init__(
        self,
        hidden: int,
        mode: ItemMode = "text",
        text: FrozenItemText | TrainableItemText | None = None,
        experts: int = 8,
        adaptor_dropout: float = 0.2,
    ):
        super().__init__()
        self.mode, self.hidden = mode, hidden
        if mode != "id":
            if text is None:
                raise ValueError(f"item mode {mode!r} needs text vectors: set the data module's text_encoder")
            self.text = text
            self.adaptor = MoEAdaptor(text.dim, hidden, experts, adaptor_dropout)
        self.id_embeddings = nn.ModuleDict()
        self.num_items: dict[str, int] = {}

    def has_domain(self, name: str) -> bool:
        return name in self.num_items

    def add_domain(self, name: str, num_items: int, text=None, centred_items: int | None = None) -> None:
        """Registers a domain; ``text`` is (num_items + 1, D) vectors or ``TokenStates`` with row 0 for padding;
        ``centred_items``: as ``TrainableItemText.add_domain``'s."""
        if self.mode != "id":
            if text is None or len(text) != num_items + 1:
                raise ValueError(f"domain {name!r}: expected text for {num_items + 1} rows (row 0: padding)")
            self.text.add_domain(name, text, centred_items)
        if self.mode != "text" and name not in self.id_embeddings:
            self.id_embeddings[name] = self._init_ids(nn.Embedding(num_items + 1, self.hidden, padding_idx=0))
        self.num_items[name] = num_items

    @torch.no_grad()
    def _init_ids(self, emb: nn.Embedding) -> nn.Embedding:
        if self.mode == "text+id":
            nn.init.zeros_(emb.weight)  # starts as the text prior; IDs learn a residual
        else:
            nn.init.normal_(emb.weight, std=0.02)
            emb.weight[0].zero_()
        return emb

    def reset_parameters(self) -> None:
        """Re-initialises every ID table as ``add_domain`` did (the adaptor initialises itself)."""
        for emb in self.id_embeddings.values():
            self._init_ids(emb)

    def forward(
        self, domain: str, items: torch.Tensor | None = None, train_items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Vectors of ``items`` (K,) → (K, hidden), or the whole table (num_items + 1, hidden) when None.

        Row 0 (padding) is all zeros. ``train_items``: items whose language-model path gets gradients
        this step (a trainable text source only).
        """
        parts = []
        if self.mode != "id":
            if items is None:
                vectors = self.text(domain, None, train_items)[1:]  # (N, T)
            else:
                vectors = self.text(domain, items, train_items)  # (K, T)
            parts.append(self.adaptor(vectors))
        if self.mode != "text":
            weight = self.id_embeddings[domain].weight
            parts.append(weight[1:] if items is None else weight[items])
        out = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        if items is None:
            return torch.cat([out.new_zeros(1, self.hidden), out])
        return out * (items != 0)[:, None].to(out.dtype)
