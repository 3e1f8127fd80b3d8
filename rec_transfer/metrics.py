"""Full-ranking metrics: the target's rank among every item of its domain."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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


def user_scores(rank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's Recall@k (1 if the held-out item is in the top k) and NDCG@k, from 1-based ranks (B,)."""
    rank = rank.to(torch.float64)
    hit = (rank <= k).to(torch.float64)
    return hit, hit / torch.log2(rank + 1)


# NDCG@10 chooses checkpoints, stops training early and ends the source phase: every evaluation computes it.
MONITORED_CUTOFF = 10


def metric_cutoffs(ks: tuple[int, ...] | list[int] = (10, 50)) -> tuple[int, ...]:
    """The sorted cut-offs K of an evaluation: ``ks`` and always ``MONITORED_CUTOFF``; each K must be >= 1."""
    bad = [k for k in ks if int(k) != k or k < 1]
    if bad:
        raise ValueError(f"metric cut-offs must be whole numbers >= 1, got {bad}")
    return tuple(sorted({int(k) for k in ks} | {MONITORED_CUTOFF}))


class RankingMetrics(Metric):
    """Full-ranking metrics of one held-out item per user, accumulated as sums so DDP sync is exact.

    For every cut-off K: ``recall@K``, ``ndcg@K``, ``hitrate@K``, ``precision@K`` and ``f1@K``; and ``mrr``. With one
    relevant item per user (the leave-one-out protocol), a user's top K holds it or not, so HitRate@K = Recall@K (the
    share of users whose item is in their top K), Precision@K = HitRate@K / K and F1@K = 2·P·R / (P + R) =
    2·HitRate@K / (K + 1); averaging F1 per user gives the same number. They are reported under the names papers
    use (the method's own evaluation names precision, recall and F1).

    Args:
        ks: the cut-offs K; ``MONITORED_CUTOFF`` (10) is always added (see ``metric_cutoffs``).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: tuple[int, ...] | list[int] = (10, 50), **kwargs):
        super().__init__(**kwargs)
        self.ks = metric_cutoffs(ks)
        for k in self.ks:
            self.add_state(f"recall_{k}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"ndcg_{k}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mrr", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update_ranks(self, rank: torch.Tensor) -> None:
        """Adds a batch of 1-based ranks (B,) of each user's held-out item."""
        self.update(rank=rank)  # through torchmetrics' wrapped update: it counts updates and drops cached results

    def update(
        self, scores: torch.Tensor | None = None, target: torch.Tensor | None = None, rank: torch.Tensor | None = None
    ) -> None:
        """Scores (B, N + 1) with padding column at ``-inf`` and targets (B,); or the targets' ranks (B,)."""
        if rank is None:
            rank = pessimistic_rank(scores, target)
        for k in self.ks:
            recall, ndcg = user_scores(rank, k)
            setattr(self, f"recall_{k}", getattr(self, f"recall_{k}") + recall.sum())
            setattr(self, f"ndcg_{k}", getattr(self, f"ndcg_{k}") + ndcg.sum())
        self.mrr += (1.0 / rank.to(torch.float64)).sum()
        self.count += rank.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        out = {}
        for k in self.ks:
            recall = getattr(self, f"recall_{k}") / n
            out[f"recall@{k}"] = recall.float()
            out[f"ndcg@{k}"] = (getattr(self, f"ndcg_{k}") / n).float()
            out[f"hitrate@{k}"] = recall.float()
            out[f"precision@{k}"] = (recall / k).float()
            out[f"f1@{k}"] = (2 * recall / (k + 1)).float()
        out["mrr"] = (self.mrr / n).float()
        return out


class UserScores(Metric):
    """Each user's NDCG@K and Recall@K (K = ``MONITORED_CUTOFF``), kept per user rather than summed, so that two models
    tested on the same users can be compared user by user (``paired_comparison``). Ranks gather every user once
    (evaluation users are split across ranks without duplicates); ``compute`` orders them by user index."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.k = MONITORED_CUTOFF
        for name in ("user", "ndcg", "recall"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, user: torch.Tensor, rank: torch.Tensor) -> None:
        """Users (B,) and the 1-based ranks (B,) of their held-out items."""
        recall, ndcg = user_scores(rank, self.k)
        self.user.append(user.to(self.device))
        self.ndcg.append(ndcg)
        self.recall.append(recall)

    def compute(self) -> dict[str, torch.Tensor]:
        user = dim_zero_cat(self.user)
        order = user.argsort()
        return {
            "user": user[order],
            f"ndcg@{self.k}": dim_zero_cat(self.ndcg)[order],
            f"recall@{self.k}": dim_zero_cat(self.recall)[order],
        }


def mean_and_error(values: torch.Tensor) -> tuple[float, float]:
    """The mean of one value per user and its standard error: how far it would move on another draw of as many
    users (0 for a single user)."""
    values = values.double()
    se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return values.mean().item(), se


def z_score(mean: float, se: float) -> float:
    return round(mean / se, 2) if se > 0 else 0.0  # no spread, no z


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Means of ``a`` and ``b`` (one value per user, same users in the same order), the mean difference a - b, its
    standard error and z."""
    mean, se = mean_and_error(a.double() - b.double())
    return {
        "a": round(a.double().mean().item(), 5),
        "b": round(b.double().mean().item(), 5),
        "difference": round(mean, 5),
        "standard_error": round(se, 5),
        "z": z_score(mean, se),
    }


def paired_comparison(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """``paired_difference`` of NDCG@10 and Recall@10 of two ``UserScores`` results, which must hold the same users.
    The standard error is that of the test users' draw: seed-to-seed training noise comes on top."""
    # reshape: torchmetrics' compute() hands one user's scores back as 0-d tensors (a target with one test user)
    a, b = ({k: v.cpu().reshape(-1) for k, v in scores.items()} for scores in (a, b))
    if not torch.equal(a["user"], b["user"]):
        raise ValueError("the two models were not tested on the same users: same target and data?")
    metrics = [m for m in a if m != "user"]
    return {"users": len(a["user"]), **{m: paired_difference(a[m], b[m]) for m in metrics}}
