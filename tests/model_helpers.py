"""A tiny recommender, a stand-in language-model top and the batches of the ``tiny_domain`` fixture, for the model
tests."""

import torch

from rec_transfer.data.batching import SequenceView, collate
from rec_transfer.models.recommender import TransferRecommender


def tiny_model(mode="id", **kw) -> TransferRecommender:
    return TransferRecommender(mode=mode, hidden_size=32, layers=2, heads=2, dropout=0.0, max_len=10, **kw)


def batches(domain, split, size=64, pack_to=None) -> list[dict]:
    offsets, values = domain.flat()
    view = SequenceView("books", offsets, values, split, max_len=10)
    rows = [[view[i] for i in range(s, min(s + size, len(view)))] for s in range(0, len(view), size)]
    return [collate(r, pack_to=pack_to) for r in rows]


class TinyTop(torch.nn.Module):
    """A stand-in for ``TextTop``: the mean of linearly mapped token states."""

    def __init__(self, width: int):
        super().__init__()
        self.lin = torch.nn.Linear(width, width)
        self.model = type("M", (), {"config": type("C", (), {"hidden_size": width})()})()

    def forward(self, states, mask):
        out = self.lin(states.float()) * mask[..., None]
        return out.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
