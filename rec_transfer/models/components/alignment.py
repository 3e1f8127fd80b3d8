"""Domain-adversarial alignment of item vectors (gradient reversal, as in DANN: Ganin et al., JMLR 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient flows back multiplied by ``-strength``."""
    return _ReverseGradient.apply(x, strength)


class DomainDiscriminator(nn.Module):
    """Tells source item vectors from target item vectors, through a gradient reversal.

    Its loss trains the discriminator to separate the domains and, reversed, trains whatever produced the
    vectors (the item tower) to make them impossible to separate: source and target items end up in one
    shared region of the item space, which is what a model trained on the sources needs to rank target items.

    Args:
        hidden: width of the item vectors.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, D) source and (T, D) target vectors → (binary cross-entropy, accuracy) of telling them apart."""
        vectors = reverse_gradient(torch.cat([source, target]))
        labels = torch.cat([source.new_zeros(len(source)), source.new_ones(len(target))])
        logits = self.net(vectors.float()).squeeze(-1)  # (S + T,)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0).float() == labels).float().mean()
        return loss, accuracy.detach()
