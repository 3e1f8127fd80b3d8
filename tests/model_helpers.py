"""A tiny recommender and the batches of the ``tiny_domain`` fixture, for the model tests."""

from rec_transfer.data.batching import SequenceView, collate
from rec_transfer.models.recommender import TransferRecommender


def tiny_model(mode="id", **kw) -> TransferRecommender:
    return TransferRecommender(mode=mode, hidden_size=32, layers=2, heads=2, dropout=0.0, max_len=10, **kw)


def batches(domain, split, size=64, pack_to=None) -> list[dict]:
    offsets, values = domain.flat()
    view = SequenceView("books", offsets, values, split, max_len=10)
    rows = [[view[i] for i in range(s, min(s + size, len(view)))] for s in range(0, len(view), size)]
    return [collate(r, pack_to=pack_to) for r in rows]
