"""Full-ranking metrics: the target's rank among every item of its domain."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def pessimistic_rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target, counting every tie against it.

    Args:
        scores: (B, N + 1) scores; column 0 is padding and must already be ``-inf``.
        target: (B,) dense item indices in ``1..N``.

    Items tied with the target (text-only models score identical texts identically) are all
    placed above it: rank = #{items with score >= target score}. Counting only strictly higher
    scores would reward ties, a known flaw in one public implementation.
    """
    target_score = scores.gather(1, target[:, None])  # (B, 1)
    return (scores >= target_score).sum(dim=1)  # (B,)


class RankingMetrics(Metric):
    """Recall@K, NDCG@K (one relevant item) and MRR, accumulated as sums so DDP sync is exact."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: tuple[int, ...] = (10, 50), **kwargs):
        super().__init__(**kwargs)
        self.ks = tuple(ks)
        for k in self.ks:
            self.add_state(f"recall_{k}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"ndcg_{k}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mrr", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update_ranks(self, rank: torch.Tensor) -> None:
        rank = rank.to(torch.float64)
        for k in self.ks:
            hit = rank <= k
            setattr(self, f"recall_{k}", getattr(self, f"recall_{k}") + hit.sum())
            setattr(self, f"ndcg_{k}", getattr(self, f"ndcg_{k}") + (hit / torch.log2(rank + 1)).sum())
        self.mrr += (1.0 / rank).sum()
        self.count += rank.numel()

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        """Scores (B, N + 1) with padding column at ``-inf``; targets (B,)."""
        self.update_ranks(pessimistic_rank(scores, target))

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        out = {}
        for k in self.ks:
            out[f"recall@{k}"] = (getattr(self, f"recall_{k}") / n).float()
            out[f"ndcg@{k}"] = (getattr(self, f"ndcg_{k}") / n).float()
        out["mrr"] = (self.mrr / n).float()
        return out
